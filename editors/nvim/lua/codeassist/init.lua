-- codeassist for Neovim 0.11+: starts `codeassist serve` through the built-in LSP client and
-- shows its inline completions as ghost text (Neovim 0.11 has no inline-completion UI).
--
--   require("codeassist").setup({ init_options = { maxNewTokens = 64 } })
--
-- Insert mode: suggestions appear after `debounce_ms` without typing; <Tab> accepts, <C-l>
-- accepts one line, <M-Right> one word, <C-]> dismisses, <M-\> asks at once (with up to two
-- other suggestions), <M-]> / <M-[> show the next / previous one (asking for them first when
-- only one is there). Typing the suggestion's first characters, or accepting a part of it,
-- keeps showing its rest at once (the server answers the same from its cache).
-- Commands: :CodeassistStatus, :CodeassistSearch {query} (results in the quickfix list).
-- Hover (K) and workspace symbols use Neovim's own LSP functions. Where the cursor rests
-- (`cursor_hint_ms` after it stops moving) the server is told (`codeassist/cursor`), and it
-- encodes that place before the first key there.
local M = {}

local defaults = {
  cmd = { "codeassist", "serve" },
  filetypes = { "python", "javascript", "typescript", "go", "rust", "java", "c", "cpp", "lua" },
  root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml" },
  init_options = {},
  auto_trigger = true,
  debounce_ms = 150,
  cursor_hint_ms = 150, -- false: never tell the server where the cursor rests
  highlight = "Comment",
  keymaps = { accept = "<Tab>", accept_line = "<C-l>", accept_word = "<M-Right>", next = "<M-]>",
              previous = "<M-[>", dismiss = "<C-]>", trigger = "<M-\\>" },
}

local config = vim.deepcopy(defaults)
local ns = vim.api.nvim_create_namespace("codeassist")
-- bufnr -> { timer, request = { client, id }, shown = { row, col, text },
--           choices = { row, col, texts, index } (the suggestions of the last answer) }
local buffers = {}

local function buffer_state(buf)
  buffers[buf] = buffers[buf] or {}
  return buffers[buf]
end

local function client_of(buf)
  return vim.lsp.get_clients({ bufnr = buf, name = "codeassist" })[1]
end

local function cancel_request(state)
  if state.request then
    state.request.client:cancel_request(state.request.id)
    state.request = nil
  end
end

local function clear(buf, state)
  state.shown = nil
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  end
end

-- Ghost text at (row, col), 0-based row and byte column: the first line inline, the others
-- as virtual lines below.
local function show(buf, row, col, text)
  local state = buffer_state(buf)
  clear(buf, state)
  if text == "" then
    return
  end
  local lines = vim.split(text, "\n", { plain = true })
  local mark = { virt_text = { { lines[1], config.highlight } }, virt_text_pos = "inline", hl_mode = "combine" }
  if #lines > 1 then
    mark.virt_lines = {}
    for i = 2, #lines do
      table.insert(mark.virt_lines, { { lines[i], config.highlight } })
    end
  end
  vim.api.nvim_buf_set_extmark(buf, ns, row, col, mark)
  local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, true)[1]
  state.shown = { row = row, col = col, text = text, line = line }
end

-- The suggestion's text from the cursor on: an item may replace a range that starts before
-- the cursor (what was typed of it already).
local function text_after_cursor(item, line, cursor_col, encoding)
  local text = type(item.insertText) == "table" and item.insertText.value or item.insertText
  if type(text) ~= "string" then
    return nil
  end
  if item.range then
    local start = item.range.start
    local start_col = vim.str_byteindex(line, encoding, start.character, false)
    if start_col < cursor_col then
      local typed = line:sub(start_col + 1, cursor_col)
      if text:sub(1, #typed) ~= typed then
        return nil
      end
      text = text:sub(#typed + 1)
    end
  end
  return text
end

--- Ask the server for a suggestion at the cursor of the current window (kind 1: asked for
--- explicitly, with alternatives; then `step` picks the one shown: 1 the next, -1 the last).
function M.trigger(kind, step)
  local buf = vim.api.nvim_get_current_buf()
  local client = client_of(buf)
  if not client then
    return
  end
  local state = buffer_state(buf)
  cancel_request(state)
  local win = vim.api.nvim_get_current_win()
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = kind or 2 } -- 1: invoked, 2: automatic
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local ok, id = client:request("textDocument/inlineCompletion", params, function(err, result)
    if state.request and state.request.id == id then
      state.request = nil
    end
    if err or not result or not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    -- Only where it was asked for: the user may have typed or moved meanwhile.
    local now = vim.api.nvim_win_is_valid(win) and vim.api.nvim_win_get_cursor(win) or {}
    if vim.api.nvim_buf_get_changedtick(buf) ~= tick or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      return
    end
    local items = result.items or result
    local line = vim.api.nvim_buf_get_lines(buf, cursor[1] - 1, cursor[1], true)[1]
    local texts = {}
    for _, item in ipairs(items) do
      local text = text_after_cursor(item, line, cursor[2], client.offset_encoding)
      if text and text ~= "" then
        table.insert(texts, text)
      end
    end
    if #texts > 0 then
      local index = step and (step % #texts) + 1 or 1
      state.choices = { row = cursor[1] - 1, col = cursor[2], texts = texts, index = index }
      show(buf, cursor[1] - 1, cursor[2], texts[index])
    end
  end, buf)
  if ok then
    state.request = { client = client, id = id }
  end
end

--- The ghost text shown in `buf` (default: current), or nil.
function M.suggestion(buf)
  local state = buffers[buf or vim.api.nvim_get_current_buf()]
  return state and state.shown and state.shown.text or nil
end

--- The suggestions of the last answer at the shown suggestion's place, and which is shown.
function M.choices(buf)
  local state = buffers[buf or vim.api.nvim_get_current_buf()]
  local shown, choices = state and state.shown, state and state.choices
  if shown and choices and choices.row == shown.row and choices.col == shown.col then
    return choices.texts, choices.index
  end
  return shown and { shown.text } or {}, 1
end

--- Show the suggestion `step` away among the choices (asking for alternatives when the
--- answer had one).
function M.cycle(step)
  local buf = vim.api.nvim_get_current_buf()
  local state = buffer_state(buf)
  local texts, index = M.choices(buf)
  if #texts > 1 then
    state.choices.index = (index - 1 + step) % #texts + 1
    show(buf, state.shown.row, state.shown.col, texts[state.choices.index])
  elseif state.shown then
    M.trigger(1, step)
  else
    return false
  end
  return true
end

-- The first word of `text`: leading blanks and line breaks, then a run of word characters
-- or of other signs.
local function first_word(text)
  return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text
end

--- Insert the shown suggestion, or a part of it (`part`: "line" or "word"), and move the
--- cursor to its end; the rest of a part stays shown.
function M.accept(part)
  local buf = vim.api.nvim_get_current_buf()
  local state = buffer_state(buf)
  local shown = state.shown
  if not shown then
    return false
  end
  local text = shown.text
  if part == "word" then
    text = first_word(text)
  elseif part == "line" then
    local newline = text:find("\n", 1, true)
    -- The rest of the current line; on an empty one, the next line with its line break.
    if newline == 1 then
      local next_break = text:find("\n", 2, true)
      text = next_break and text:sub(1, next_break - 1) or text
    elseif newline then
      text = text:sub(1, newline - 1)
    end
  end
  clear(buf, state)
  local lines = vim.split(text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(buf, shown.row, shown.col, shown.row, shown.col, lines)
  local row = shown.row + #lines - 1
  local col = #lines == 1 and shown.col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  if #text < #shown.text then
    show(buf, row, col, shown.text:sub(#text + 1))
  end
  return true
end

function M.dismiss(buf)
  buf = buf or vim.api.nvim_get_current_buf()
  local state = buffer_state(buf)
  cancel_request(state)
  if state.timer then
    state.timer:stop()
  end
  clear(buf, state)
end

-- After typing: if the typed characters are the start of the shown suggestion, show its rest
-- at once; ask the server again after a pause either way.
local function on_change(buf)
  local state = buffer_state(buf)
  local shown = state.shown
  local cursor = vim.api.nvim_win_get_cursor(0)
  local kept = false
  if shown and cursor[1] - 1 == shown.row then
    local line = vim.api.nvim_buf_get_lines(buf, shown.row, shown.row + 1, true)[1]
    if cursor[2] == shown.col and line == shown.line then
      kept = true -- already shown here (CursorMovedI and TextChangedI both report a keystroke)
    elseif cursor[2] > shown.col then
      local typed = line:sub(shown.col + 1, cursor[2])
      if #typed < #shown.text and shown.text:sub(1, #typed) == typed then
        show(buf, shown.row, cursor[2], shown.text:sub(#typed + 1))
        kept = true
      end
    end
  end
  if not kept then
    clear(buf, state)
  end
  cancel_request(state)
  if not config.auto_trigger then
    return
  end
  state.timer = state.timer or vim.uv.new_timer()
  state.timer:stop()
  state.timer:start(config.debounce_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_get_current_buf() == buf and vim.fn.mode():sub(1, 1) == "i" then
      M.trigger(2)
    end
  end))
end

local function map_keys(buf)
  local keys = config.keymaps
  local function fallback(key)
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(key, true, false, true), "n", false)
  end
  local function map(key, action, description)
    if key then
      vim.keymap.set("i", key, function()
        if not action() then
          fallback(key)
        end
      end, { buffer = buf, desc = description })
    end
  end
  map(keys.accept, function() return M.accept() end, "codeassist: accept the suggestion")
  map(keys.accept_line, function() return M.accept("line") end, "codeassist: accept one line")
  map(keys.accept_word, function() return M.accept("word") end, "codeassist: accept one word")
  map(keys.next, function() return M.cycle(1) end, "codeassist: the next suggestion")
  map(keys.previous, function() return M.cycle(-1) end, "codeassist: the previous suggestion")
  map(keys.dismiss, function()
    local had = M.suggestion(buf) ~= nil
    M.dismiss(buf)
    return had
  end, "codeassist: dismiss the suggestion")
  map(keys.trigger, function() M.trigger(1) return true end, "codeassist: suggest now")
end

-- Tell the server where the cursor rests, once it has rested `cursor_hint_ms`.
local function hint_cursor(buf)
  if not config.cursor_hint_ms then
    return
  end
  local state = buffer_state(buf)
  state.hint_timer = state.hint_timer or vim.uv.new_timer()
  state.hint_timer:stop()
  state.hint_timer:start(config.cursor_hint_ms, 0, vim.schedule_wrap(function()
    local client = client_of(buf)
    if client and vim.api.nvim_get_current_buf() == buf then
      client:notify("codeassist/cursor", vim.lsp.util.make_position_params(0, client.offset_encoding))
    end
  end))
end

--- Start (or reuse) the server for `buf` and show suggestions there.
function M.attach(buf)
  local root = vim.fs.root(buf, config.root_markers) or vim.fn.getcwd()
  local id = vim.lsp.start({
    name = "codeassist",
    cmd = config.cmd,
    root_dir = root,
    init_options = config.init_options,
  }, { bufnr = buf })
  if not id or buffer_state(buf).attached then
    return id
  end
  buffer_state(buf).attached = true
  map_keys(buf)
  local group = vim.api.nvim_create_augroup("codeassist_buffer_" .. buf, { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group, buffer = buf, callback = function() on_change(buf) end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group, buffer = buf, callback = function() M.dismiss(buf) end,
  })
  vim.api.nvim_create_autocmd({ "CursorMoved", "BufEnter" }, {
    group = group, buffer = buf, callback = function() hint_cursor(buf) end,
  })
  vim.api.nvim_create_autocmd("CursorMovedI", {
    group = group, buffer = buf,
    callback = function()
      hint_cursor(buf)
      local shown = buffer_state(buf).shown
      local cursor = vim.api.nvim_win_get_cursor(0)
      if shown and (cursor[1] - 1 ~= shown.row or cursor[2] ~= shown.col) then
        on_change(buf) -- typed into it (handled there) or moved away
      end
    end,
  })
  vim.api.nvim_create_autocmd("BufWipeout", {
    group = group, buffer = buf,
    callback = function()
      M.dismiss(buf)
      local state = buffers[buf]
      for _, name in ipairs({ "timer", "hint_timer" }) do
        if state and state[name] then
          state[name]:close()
        end
      end
      buffers[buf] = nil
    end,
  })
  return id
end

local function execute(command, arguments, on_result)
  local buf = vim.api.nvim_get_current_buf()
  local client = client_of(buf) or vim.lsp.get_clients({ name = "codeassist" })[1]
  if not client then
    vim.notify("codeassist: no server running (open a file of a configured filetype)", vim.log.levels.WARN)
    return
  end
  client:request("workspace/executeCommand", { command = command, arguments = arguments },
    function(err, result)
      if err then
        vim.notify("codeassist: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      else
        on_result(result)
      end
    end, buf)
end

--- Semantic code search over the workspace index; results go to the quickfix list.
function M.search(query, k)
  execute("codeassist.search", { { query = query, k = k or 20 } }, function(hits)
    local items = {}
    for _, hit in ipairs(hits or {}) do
      local first = (hit.snippet or ""):match("[^\n]*") or ""
      table.insert(items, {
        filename = vim.uri_to_fname(hit.uri),
        lnum = hit.range.start.line + 1,
        text = string.format("%s  %s", hit.symbol or "", vim.trim(first)),
      })
    end
    vim.fn.setqflist({}, " ", { title = "codeassist: " .. query, items = items })
    if #items > 0 then
      vim.cmd("copen")
    else
      vim.notify("codeassist: nothing found for " .. query)
    end
  end)
end

function M.status()
  execute("codeassist.status", {}, function(result)
    vim.notify(vim.inspect(result))
  end)
end

function M.setup(opts)
  config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup("codeassist", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group, pattern = config.filetypes, callback = function(args) M.attach(args.buf) end,
  })
  vim.api.nvim_create_user_command("CodeassistStatus", M.status, { desc = "codeassist server status" })
  vim.api.nvim_create_user_command("CodeassistSearch", function(args) M.search(args.args) end,
    { nargs = "+", desc = "codeassist: search the workspace by meaning" })
  -- Buffers already open when setup runs.
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(config.filetypes, vim.bo[buf].filetype) then
      M.attach(buf)
    end
  end
end

return M
