-- wrk script: request the paths of a file (one per line) in order, split over the threads,
-- and print a JSON summary. Usage: wrk ... -s paths.lua URL -- paths.txt
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(paths, line) end
  end
  step = #threads > 0 and #threads or 1
end

function request()
  local path = paths[(index % #paths) + 1]
  index = index + step
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
