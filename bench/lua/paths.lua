-- wrk script of bench/reads.py and bench/loadtest.py: requests drawn at random from
-- a file, with optional headers and a pause between requests; counts answers by
-- status and prints one JSON line at the end.
--
--   wrk -t1 -c8 -d30s -s bench/lua/paths.lua http://127.0.0.1:8080 -- FILE [OPTION...]
--
-- FILE: one request a line: "PATH" (a GET), or tab-separated
-- "METHOD<TAB>PATH<TAB>API KEY<TAB>JSON BODY" (key and body may be empty).
-- OPTIONs: "header=Name: value" (repeatable), "delay=MS" (pause per connection
-- before each request: a bounded rate), "seed=N".
-- The last line printed is `wrk-json {...}`: requests, statuses, errors and the
-- latency percentiles (ms) of the run, as wrk measured them.

local requests = {}
local headers = {}
local pause = 0
counts = {}
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local seed = 1
  for i = 2, #args do
    local name, value = args[i]:match("^(%w+)=(.*)$")
    if name == "header" then
      local key, val = value:match("^([^:]+):%s*(.*)$")
      headers[key] = val
    elseif name == "delay" then
      pause = tonumber(value)
    elseif name == "seed" then
      seed = tonumber(value)
    end
  end
  for line in io.lines(args[1]) do
    local method, path, key, body = line:match("^(%u+)\t([^\t]*)\t([^\t]*)\t?(.*)$")
    if method == nil then
      method, path, key, body = "GET", line, "", ""
    end
    if path ~= "" then
      local h = {}
      for k, v in pairs(headers) do h[k] = v end
      if key ~= "" then h["X-API-Key"] = key end
      if body ~= "" then
        h["Content-Type"] = "application/json"
      else
        body = nil
      end
      table.insert(requests, wrk.format(method, path, h, body))
    end
  end
  math.randomseed(seed * 7919 + id)
  counts = {}
end

function request()
  return requests[math.random(#requests)]
end

function delay()
  return pause
end

function response(status, hdrs, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, reqs)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests":%d,"seconds":%.3f,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3))
end
