-- wrk script of `make bench`: POSTs one hook request over and over and checks every answer's status:
--   wrk -t1 -c8 -d5s -s bench/post.lua URL -- BODY TOKENS FIRST HOLD_MS CONNECTIONS VARIANTS
-- BODY is sent naming one of VARIANTS patients in turn (`bench-a` becomes `bench-a-<n>`), so the card
-- history spreads over patients as an EHR's does. TOKENS: a bearer JWT per line ("-": none); request k
-- sends line FIRST + k, and the runner moves FIRST on by the `used` printed, so no server sees a token
-- twice. done() prints one line "BENCH_JSON {...}" for bench/run.py.

function setup(thread)
   only = thread -- run with -t1: one thread, whose counts done() reads
end

function init(args)
   local f = assert(io.open(args[1], "rb"))
   local body = f:read("*a")
   f:close()
   bodies = {}
   for n = 1, tonumber(args[6]) do
      bodies[n] = body:gsub("bench%-a", "bench-a-" .. n)
   end
   tokens = {}
   if args[2] ~= "-" then
      for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
   end
   first, hold, holds = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
   used, not_200, statuses = 0, 0, ""
   headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
end

function delay() -- each connection's first request waits HOLD_MS: the runner counts them per worker
   holds = holds - 1
   return holds >= 0 and hold or 0
end

function request()
   used = used + 1
   if #tokens > 0 then
      headers["Authorization"] = "Bearer " .. tokens[(first + used - 2) % #tokens + 1]
   end
   return wrk.format("POST", nil, headers, bodies[used % #bodies + 1])
end

function response(status, _, _)
   if status ~= 200 then
      not_200 = not_200 + 1
      if #statuses < 60 then statuses = statuses .. status .. " " end
   end
end

function done(summary, latency, _)
   local t, e = only, summary.errors
   io.write(string.format('BENCH_JSON {"requests":%d,"duration_us":%d,"used":%d,"not_200":%d,'
      .. '"statuses":"%s","socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
      summary.requests, summary.duration, t:get("used"), t:get("not_200"), t:get("statuses"),
      e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99)))
end
