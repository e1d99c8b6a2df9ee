-- count-workers.lua: a wrk script that counts which worker answered each
-- request (the X-Worker response header) and prints one "worker PID COUNT"
-- line per worker at the end. bench/perf.sh's fairness scenario.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local w = headers["X-Worker"] or headers["x-worker"] or "none"
  counts[w] = (counts[w] or 0) + 1
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for w, n in pairs(t:get("counts")) do
      io.write(string.format("worker %s %d\n", w, n))
    end
  end
end
