-- POST /source/write_batch with SYGNO_BATCH events per request (default
-- 100), small events like write.lua's. Bodies are made once per thread
-- (16 of them, cycled) so that wrk's Lua is not what is measured.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_WRITE_KEY")
local batch = tonumber(os.getenv("SYGNO_BATCH") or "100")
local bodies = {}
local next_body = 0

init = function(args)
  for b = 1, 16 do
    local events = {}
    for i = 1, batch do
      local n = b * batch + i
      events[i] = string.format(
        '{"data":{"temp":%d.5,"env":{"hum":%d,"co2":{"ppm":%d}},"label":"bench"}}',
        n % 30, n % 90, 400 + n % 100)
    end
    bodies[b] = '{"events":[' .. table.concat(events, ",") .. ']}'
  end
end

request = function()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
