-- Headless Neovim drives `codeassist serve` through its built-in LSP client.
-- Inputs come from the environment; everything Neovim received is written as JSON to OUT.
local env = vim.env
local out = {}

vim.cmd.edit(env.NVIM_TEST_FILE)
local buf = vim.api.nvim_get_current_buf()
local client_id = vim.lsp.start({
  name = "codeassist",
  cmd = vim.json.decode(env.CODEASSIST_CMD),
  root_dir = env.NVIM_TEST_ROOT,
  init_options = vim.json.decode(env.CODEASSIST_INIT),
})
local client = vim.lsp.get_client_by_id(client_id)
out.attached = vim.wait(30000, function() return vim.lsp.buf_is_attached(buf, client_id) end, 50)

out.ready = vim.wait(240000, function()
  local reply = client:request_sync("workspace/executeCommand",
    { command = "codeassist.status", arguments = {} }, 5000, buf)
  return reply ~= nil and reply.result ~= nil and reply.result.modelStatus == "ready"
end, 200)

-- Type at the end of the last line, as a user would: an incremental didChange.
local last = vim.api.nvim_buf_line_count(buf)
local line_text = vim.api.nvim_buf_get_lines(buf, last - 1, last, true)[1]
vim.api.nvim_buf_set_text(buf, last - 1, #line_text, last - 1, #line_text, { env.NVIM_TEST_TYPED })
local col = #line_text + #env.NVIM_TEST_TYPED  -- bytes: the position encoding is utf-8

out.offset_encoding = client.offset_encoding
out.inline_provider = client.server_capabilities.inlineCompletionProvider ~= nil
-- The cursor sits after the typed text (insert mode), one past the line's last character.
local params = {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  position = { line = last - 1, character = col },
}
out.position = params.position
local completion = client:request_sync("textDocument/completion", params, 120000, buf)
out.completion = completion and completion.result or vim.NIL
out.completion_error = completion and completion.err or vim.NIL
params.context = { triggerKind = 1 }
local inline = client:request_sync("textDocument/inlineCompletion", params, 120000, buf)
out.inline = inline and inline.result or vim.NIL
out.buffer = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, true), "\n")

local file = io.open(env.NVIM_TEST_OUT, "w")
file:write(vim.json.encode(out))
file:close()
client:stop()
vim.wait(5000, function() return client:is_stopped() end, 50)
vim.cmd("qa!")
