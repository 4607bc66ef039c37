-- {{< value name >}}: a number of this build, read from values.json beside _quarto.yml.
-- crlm_lib.manuscript.stage() writes values.json from the notebooks' `values-*` cells (JSON
-- outputs of crlm_lib.reporting.show_values); the offline renderer substitutes the same values.
local values = nil

local function load_values()
  if values ~= nil then
    return values
  end
  local dir = (quarto.project and quarto.project.directory) or "."
  local f = io.open(dir .. "/values.json", "r")
  if f == nil then
    error("value shortcode: " .. dir .. "/values.json not found (render with `crlm render`)")
  end
  values = quarto.json.decode(f:read("a"))
  f:close()
  return values
end

return {
  ["value"] = function(args, kwargs, meta)
    local name = pandoc.utils.stringify(args[1])
    local v = load_values()[name]
    if v == nil then
      error("value shortcode: no notebook value '" .. name .. "' in values.json")
    end
    return pandoc.Inlines(pandoc.read(v, "markdown").blocks[1].content)
  end,
}
