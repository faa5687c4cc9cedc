-- wrk script: GET the paths given after "--" in turn (one request each, round robin).
local paths = {}
local counter = 0

function init(args)
  for _, path in ipairs(args) do
    paths[#paths + 1] = wrk.format("GET", path)
  end
end

function request()
  counter = counter % #paths + 1
  return paths[counter]
end
