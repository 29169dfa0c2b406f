// The timeline of composition changes: entered / exited symbols per rebalance.

const SHOWN = 200; // rebalances drawn at once (daily indices change often); more on request

function moves(kind, symbols) {
  const span = document.createElement("span");
  span.className = kind;
  const tag = document.createElement("span");
  tag.className = "tag";
  // an icon and a word, so the meaning never rests on colour alone
  tag.textContent = kind === "entered" ? `▲ Entered (${symbols.length}): ` : `▼ Exited (${symbols.length}): `;
  span.append(tag, document.createTextNode(symbols.length ? symbols.join(", ") : "none"));
  return span;
}

/** Show the changes of GET /composition-changes, newest first. */
export function renderTimeline(list, info, changes, limit = SHOWN) {
  const newest = [...changes].reverse();
  const fragment = document.createDocumentFragment();
  for (const change of newest.slice(0, limit)) {
    const li = document.createElement("li");
    li.dataset.date = change.date;
    const time = document.createElement("time");
    time.dateTime = change.date;
    time.textContent = change.date;
    const detail = document.createElement("div");
    detail.className = "moves";
    detail.append(moves("entered", change.entered), moves("exited", change.exited));
    li.append(time, detail);
    fragment.append(li);
  }
  list.replaceChildren(fragment);
  const entered = changes.reduce((n, c) => n + c.entered.length, 0);
  const exited = changes.reduce((n, c) => n + c.exited.length, 0);
  info.replaceChildren(
    document.createTextNode(
      `${changes.length} rebalance${changes.length === 1 ? "" : "s"} changed the constituents ` +
        `(${entered} entries, ${exited} exits)` +
        (changes.length > limit ? `; the newest ${limit} are listed. ` : "."),
    ),
  );
  if (changes.length > limit) {
    const more = document.createElement("button");
    more.type = "button";
    more.className = "link-button";
    more.textContent = "Show all";
    more.addEventListener("click", () => renderTimeline(list, info, changes, changes.length));
    info.append(more);
  }
}
