-- wrk script: POST /echo with a 128-byte body (the server sends it back).
wrk.method = "POST"
wrk.path = "/echo"
wrk.body = string.rep("x", 128)
wrk.headers["Content-Type"] = "application/octet-stream"
