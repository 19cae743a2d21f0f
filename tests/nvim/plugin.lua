-- Headless Neovim with the codeassist plugin (editors/nvim), driven by typed keys: ghost text
-- after typing, its rest kept while typing into it, dismiss, ask again (and cycle through
-- the alternatives), accept one word with <M-Right>, one line with <C-l>, the rest with <Tab>.
-- Run with `nvim --headless --clean -S`: the script is a coroutine that types with
-- nvim_input and yields to Neovim's main loop, which handles the keys as a user's.
-- Inputs come from the environment; what the buffer showed is written as JSON to OUT.
local env = vim.env
local out = {}
vim.opt.runtimepath:prepend(env.CODEASSIST_PLUGIN)
vim.cmd("filetype on")
local codeassist = require("codeassist")
codeassist.setup({
  cmd = vim.json.decode(env.CODEASSIST_CMD),
  init_options = vim.json.decode(env.CODEASSIST_INIT),
  root_markers = { ".git" },
  debounce_ms = 50,
})

coroutine.wrap(function()
  vim.cmd.edit(env.NVIM_TEST_FILE)
  local buf = vim.api.nvim_get_current_buf()
  local function codeassist_client()
    return vim.lsp.get_clients({ bufnr = buf, name = "codeassist" })[1]
  end
  out.attached = vim.wait(30000, function() return codeassist_client() ~= nil end, 50)
  local client = codeassist_client()
  out.ready = client ~= nil and vim.wait(240000, function()
    local reply = client:request_sync("workspace/executeCommand",
      { command = "codeassist.status", arguments = {} }, 5000, buf)
    return reply ~= nil and reply.result ~= nil and reply.result.modelStatus == "ready"
  end, 200)

  local function ghost()
    local shown = {}
    for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(buf, -1, 0, -1, { details = true })) do
      local details = mark[4]
      if details.virt_text then
        table.insert(shown, { row = mark[2], col = mark[3], first = details.virt_text[1][1],
                              more = details.virt_lines and #details.virt_lines or 0 })
      end
    end
    return shown
  end

  local script = coroutine.running()
  -- Let the main loop run until `done()` (checked every 20 ms) or `timeout_ms`.
  local function settle(done, timeout_ms)
    local waited = 0
    while not done() and waited < timeout_ms do
      vim.defer_fn(function()
        local ok, err = coroutine.resume(script)
        if not ok then -- an error after a yield: report it, or it would vanish
          io.stderr:write(debug.traceback(script, err) .. "\n")
          vim.cmd("cquit 3")
        end
      end, 20)
      coroutine.yield()
      waited = waited + 20
    end
    return done()
  end

  local function type_keys(keys)
    vim.api.nvim_input(keys)
    settle(function() return false end, 40) -- the main loop takes the keys
  end

  local function wait_for_suggestion()
    return settle(function() return codeassist.suggestion() ~= nil end, 120000)
  end

  -- Append the typed text at the end of the last line; the suggestion comes after the pause.
  type_keys("GA" .. env.NVIM_TEST_TYPED)
  out.mode = vim.api.nvim_get_mode().mode
  out.shown = wait_for_suggestion()
  out.suggestion = codeassist.suggestion() or vim.NIL
  out.ghost = ghost()
  out.cursor_shown = vim.api.nvim_win_get_cursor(0)

  -- Typing the suggestion's first character: its rest is shown at once, before any answer.
  local first = out.suggestion ~= vim.NIL and out.suggestion:sub(1, 1) or ""
  if first:match("[%w%p]") then
    type_keys(first)
    out.rest_after_typing = codeassist.suggestion() or vim.NIL
  end

  type_keys("<C-]>")
  out.after_dismiss = ghost()
  out.suggestion_after_dismiss = codeassist.suggestion() or vim.NIL

  type_keys("<M-\\>") -- ask now
  wait_for_suggestion()
  out.asked = codeassist.suggestion() or vim.NIL
  out.choices = #codeassist.choices()
  type_keys("<M-]>")
  out.next_choice = codeassist.suggestion() or vim.NIL
  type_keys("<M-[>")
  out.back_choice = codeassist.suggestion() or vim.NIL
  type_keys("<M-Right>")
  out.rest_after_word = codeassist.suggestion() or vim.NIL
  if out.rest_after_word ~= vim.NIL then
    type_keys("<C-l>") -- one line of the rest (all of it when it is one line)
    out.rest_after_line = codeassist.suggestion() or vim.NIL
  end
  if codeassist.suggestion() then
    type_keys("<Tab>")
  end
  out.buffer = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, true), "\n")
  out.cursor = vim.api.nvim_win_get_cursor(0)
  out.after_accept = ghost()

  -- Leave insert mode and move: the resting cursor reaches the server as a warm-up hint.
  local hints_before = client:request_sync("workspace/executeCommand",
    { command = "codeassist.status", arguments = {} }, 5000, buf).result.warmUp.hints
  type_keys("<Esc>gg")
  settle(function()
    local reply = client:request_sync("workspace/executeCommand",
      { command = "codeassist.status", arguments = {} }, 5000, buf)
    out.warm_hints = reply.result.warmUp.hints - hints_before
    return out.warm_hints > 0
  end, 10000)

  local file = io.open(env.NVIM_TEST_OUT, "w")
  file:write(vim.json.encode(out))
  file:close()
  client:stop()
  vim.wait(5000, function() return client:is_stopped() end, 50)
  vim.cmd("qa!")
end)()
