-- wrk script for the benchmark: POSTs one JSON body over and over.
--
--   wrk ... -s bench/post.lua URL -- BODY_FILE [TOKENS_FILE|-] [STATUSES] [THREADS] [PATIENT VARIANTS]
--
-- BODY_FILE    the request body (application/json).
-- PATIENT      the patient id in the body; with VARIANTS > 1 every occurrence is replaced by one of
--              VARIANTS different ids (PATIENT-t<thread>-<n>), used in turn, so the load spreads over
--              many patients as an EHR's does (the per-patient card history stays realistic).
-- TOKENS_FILE  one bearer JWT per line; each request uses a token no other request used (thread i of
--              THREADS takes lines i, i+THREADS, ...). "-" or absent: no Authorization header.
-- STATUSES     "errors" (default): wrk's own count of responses with a status of 400 or more.
--              "each": a response() callback checks every status and counts any other than 200.
--              The callback makes wrk copy each response's headers and body into Lua, a cost per
--              byte answered that shares the CPUs with the servers: a 13 KB answer pays it, the
--              floor's 0.3 KB hardly. Latency runs leave it off; the error-counting soak uses it.
-- THREADS      wrk's -t, for striding the tokens.
--
-- done() prints one line "BENCH_JSON {...}" with counts (responses: those the Lua callback saw, so 0
-- with "errors"; requests counts every answer), wrk's error counters, the responses with an
-- unwanted status (not_200: any status but 200 with "each", 400 or more with "errors") and the
-- latency percentiles in microseconds; bench/run.py parses it.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   body = read_file(args[1])
   each = args[3] == "each"
   stride = tonumber(args[4] or "1") or 1
   headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
   tokens = nil
   if args[2] and args[2] ~= "-" then
      tokens = {}
      for line in io.lines(args[2]) do
         tokens[#tokens + 1] = line
      end
   end
   bodies = { body }
   local patient, variants = args[5], tonumber(args[6] or "1") or 1
   if patient and patient ~= "-" and variants > 1 then
      local pattern = patient:gsub("%p", "%%%0")
      bodies = {}
      for n = 1, variants do
         local id = string.format("%s-t%d-%d", patient, tid, n)
         bodies[n] = body:gsub(pattern, id)
      end
   end
   formatted = {}
   for n, b in ipairs(bodies) do
      formatted[n] = wrk.format("POST", nil, headers, b)
   end
   turn = 0
   next_token = tid
   responses = 0
   not_ok = 0
   exhausted = 0
   statuses = ""
   if not each then
      -- wrk asks once, after init, whether the script has a response(): without it, wrk neither
      -- buffers nor copies responses.
      response = nil
   end
end

function request()
   turn = turn % #bodies + 1
   if tokens == nil then
      return formatted[turn]
   end
   local token = tokens[next_token]
   if token == nil then
      -- Out of unique tokens: send none (a 401, counted as an error) and say so in the results.
      exhausted = exhausted + 1
      headers["Authorization"] = nil
   else
      headers["Authorization"] = "Bearer " .. token
      next_token = next_token + stride
   end
   return wrk.format("POST", nil, headers, bodies[turn])
end

function response(status, resp_headers, resp_body)
   responses = responses + 1
   if status ~= 200 then
      not_ok = not_ok + 1
      if #statuses < 200 then
         statuses = statuses .. tostring(status) .. " "
      end
   end
end

function done(summary, latency, requests)
   local total_responses, total_not_ok, total_exhausted, codes = 0, 0, 0, ""
   local checked_each = false
   for _, thread in ipairs(threads) do
      checked_each = thread:get("each") or checked_each
      total_responses = total_responses + (thread:get("responses") or 0)
      total_not_ok = total_not_ok + (thread:get("not_ok") or 0)
      total_exhausted = total_exhausted + (thread:get("exhausted") or 0)
      codes = codes .. (thread:get("statuses") or "")
   end
   local e = summary.errors
   if not checked_each then
      total_not_ok = e.status
   end
   local pct = {}
   for _, p in ipairs({ 1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9 }) do
      pct[#pct + 1] = string.format("[%g,%d]", p, latency:percentile(p))
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"responses":%d,"statuses":"%s","not_200":%d,"not_200_sample":"%s",'
         .. '"tokens_exhausted":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,'
         .. '"p95":%d,"p99":%d},"percentiles":[%s]}\n',
      summary.requests, total_responses, checked_each and "each" or "errors", total_not_ok, codes,
      total_exhausted, summary.duration,
      summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, latency.min, latency.mean,
      latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(95), latency:percentile(99), table.concat(pct, ",")))
end
