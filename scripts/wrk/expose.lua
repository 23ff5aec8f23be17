-- POST /source/expose for the type in $SYGNO_EXPOSE_TYPE (default
-- 24h_average), of the source $SYGNO_EXPOSE_NAME if set.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_READ_KEY")
local name = os.getenv("SYGNO_EXPOSE_NAME")
local named = ""
if name then
  named = ',"name":"' .. name .. '"'
end
wrk.body = '{"type":"' .. (os.getenv("SYGNO_EXPOSE_TYPE") or "24h_average") .. '"' .. named .. '}'
