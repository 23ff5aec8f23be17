-- POST /source/write_raw with a varied event per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_WRITE_KEY")
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"data":{"temp":%d.5,"env":{"hum":%d,"co2":{"ppm":%d}},"label":"bench"}}',
    counter % 30, counter % 90, 400 + counter % 100)
  return wrk.format(nil, nil, nil, body)
end
