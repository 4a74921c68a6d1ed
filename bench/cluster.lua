-- wrk script of bench/cluster: the same small POST as post.lua, spread round-robin over the
-- functions e00 .. e(N-1) (N from the environment, FV_FUNCTIONS), so consistent hashing has
-- several names to place.
local n = tonumber(os.getenv("FV_FUNCTIONS") or "12")
local i = 0
request = function()
  i = (i + 1) % n
  return wrk.format("POST", string.format("/function/e%02d", i), {["Content-Type"] = "text/plain"},
                    "hello, faasvisor")
end
