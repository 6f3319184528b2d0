-- wrk script for benches/load/run.sh.
--
-- Always: done() prints one machine-readable line
--   WRKRESULT requests=N duration_us=N rps=F p50_us=N p99_us=N non2xx=N errors=N wraps=N
--             connect=N timeouts=N
-- (non2xx = responses outside 2xx/3xx, errors = connect + read + write + timeout errors).
--
-- With WRK_TOKEN_DIR set: each request carries the next token of this thread's own file
-- (<dir>/tokens-<thread>.txt, one token a line), so no two requests share a token until a
-- file is used up; then it starts over and `wraps` counts how often that happened.
-- With WRK_DPOP_TOKEN set as well, the lines are DPoP proofs (RFC 9449 §4): each request
-- carries `Authorization: DPoP <that token>` and the next proof in a `DPoP` header.
-- Without it the request is static (wrk's fast path) and the -H header gives the token.

local token_dir = os.getenv("WRK_TOKEN_DIR")
local dpop_token = os.getenv("WRK_DPOP_TOKEN")
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  thread:set("wraps", 0)
  table.insert(threads, thread)
end

if token_dir then
  local file
  local path

  function init(args)
    path = token_dir .. "/tokens-" .. id .. ".txt"
    file = assert(io.open(path, "r"))
    wraps = 0
  end

  function request()
    local token = file:read("*l")
    if token == nil or token == "" then
      file:seek("set", 0)
      wraps = wraps + 1
      token = file:read("*l")
    end
    if dpop_token then
      return wrk.format(nil, nil, { ["Authorization"] = "DPoP " .. dpop_token, ["DPoP"] = token })
    end
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token })
  end
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wraps") or 0)
  end
  local e = summary.errors
  local rps = 0
  if summary.duration > 0 then
    rps = summary.requests / (summary.duration / 1e6)
  end
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d errors=%d wraps=%d connect=%d timeouts=%d\n",
    summary.requests, summary.duration, rps,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, wraps, e.connect, e.timeout))
end
