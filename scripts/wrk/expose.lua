-- POST /source/expose for the type in $SYGNO_EXPOSE_TYPE (default 24h_average).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_READ_KEY")
wrk.body = '{"type":"' .. (os.getenv("SYGNO_EXPOSE_TYPE") or "24h_average") .. '"}'
