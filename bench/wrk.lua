-- wrk script for bench/run.sh. METHOD=POST sends BODY_FILE (1 KiB of JSON) as the request
-- body; at the end one line `WRKJSON {...}` carries the counts and latency percentiles (us).
local method = os.getenv("METHOD") or "GET"
wrk.method = method
if method == "POST" then
  local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, "p50_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
