-- POST /source/series with the body in $SYGNO_SERIES_BODY.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("SYGNO_READ_KEY")
wrk.body = os.getenv("SYGNO_SERIES_BODY")
