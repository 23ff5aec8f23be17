-- POST /source/write_raw with a varied event per request; with
-- SYGNO_SOURCES=N, spread over N sources (names gh-0 .. gh-N-1; unset or 0:
-- events without a source).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_WRITE_KEY")
local sources = tonumber(os.getenv("SYGNO_SOURCES") or "0")
local counter = 0
request = function()
  counter = counter + 1
  local name = ""
  if sources > 0 then
    name = string.format('"name":"gh-%d",', counter % sources)
  end
  local body = string.format(
    '{%s"data":{"temp":%d.5,"env":{"hum":%d,"co2":{"ppm":%d}},"label":"bench"}}',
    name, counter % 30, counter % 90, 400 + counter % 100)
  return wrk.format(nil, nil, nil, body)
end
