// Number and date formatting, fixed to en-US so that the page reads the same everywhere.

const level = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const ratio = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

/** A fraction as a percentage with two decimals (0.1234 -> "12.34%"); "n/a" for null. */
export function pct(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
  return `${(value * 100).toFixed(2)}%`;
}

/** A fraction as a signed percentage ("+1.20%", "-0.35%"). */
export function signedPct(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
  const text = pct(value);
  return value > 0 ? `+${text}` : text;
}

/** An index level with two decimals and thousands separators. */
export function points(value) {
  return value === null || value === undefined ? "n/a" : level.format(value);
}

/** A ratio such as Sharpe, two decimals. */
export function num(value) {
  return value === null || value === undefined ? "n/a" : ratio.format(value);
}

/** Dollars, compact (market caps): "$1.23B". */
export function usdCompact(value) {
  return value === null || value === undefined ? "n/a" : `$${compact.format(value)}`;
}

/** Dollars with cents. */
export function usd(value) {
  return value === null || value === undefined ? "n/a" : money.format(value);
}

/** "YYYY-MM-DD" of a Date (UTC). */
export function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

/** A UTC timestamp from the API as "YYYY-MM-DD HH:MM UTC". */
export function utcStamp(value) {
  if (!value) return "never";
  const text = String(value).replace("T", " ");
  return `${text.slice(0, 16)} UTC`;
}

/** A duration in seconds as "3 h", "2 d", "45 min". */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
