-- wrk script of bench/api/run.sh: sends the API key from $API_KEY (if set), rotates over the request paths listed
-- one per line in $PATHS_FILE (if set; else the URL's path is used), and prints one line
-- `WRKJSON {...}` at the end with requests, errors and latency percentiles in microseconds.
local key = os.getenv("API_KEY")
if key and key ~= "" then
  wrk.headers["X-API-Key"] = key
end

local paths = nil
local file = os.getenv("PATHS_FILE")
if file and file ~= "" then
  paths = {}
  for line in io.lines(file) do
    if line ~= "" then
      paths[#paths + 1] = line
    end
  end
end

local n = 0

function setup(thread)
  thread:set("offset", math.random(1, 1000000))
end

function init(args)
  n = offset or 0
end

if paths then
  function request()
    n = n % #paths + 1
    return wrk.format(nil, paths[n])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p75_us":%d,"p90_us":%d,"p95_us":%d,'
      .. '"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9), latency.max))
end
