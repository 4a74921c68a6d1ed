-- wrk script of bench/async: POST /async-function/echo, the result called back to the
-- receiver named by FV_CALLBACK_URL (bench/callback_sink).
wrk.method = "POST"
wrk.body = "hello, faasvisor"
wrk.headers["Content-Type"] = "text/plain"
local callback = os.getenv("FV_CALLBACK_URL")
if callback ~= nil and callback ~= "" then
  wrk.headers["X-Callback-Url"] = callback
end
