-- Starts the `codegeex2` language server (lsp/codegeex2.lua) for every file and
-- puts its suggestions in insert mode:
--   Neovim 0.12+: ghost text from textDocument/inlineCompletion, <Tab> accepts it.
--   Neovim 0.11:  the completion menu (<C-Space> or <C-x><C-o>), <C-y> accepts;
--                 an accepted item inserts the whole suggestion, every line of it.
-- Set vim.g.codegeex2_enable = false before this file runs to keep only the config.

if vim.g.loaded_codegeex2 or vim.fn.has('nvim-0.11') == 0 then
  return
end
vim.g.loaded_codegeex2 = true

if vim.g.codegeex2_enable == false then
  return
end

local api = vim.api

--- The first line of a suggestion: what the completion menu shows and inserts.
---@param text string
---@return string
local function first_line(text)
  return (text:match('^[^\n]*'))
end

--- Neovim 0.11 inserts only the first word of a plain-text completion item, and
--- the menu cannot insert line breaks. After an item of ours is accepted, replace
--- the first line that the menu inserted with the whole suggestion.
---@param client_id integer
local function insert_whole_suggestion(client_id)
  local done = vim.v.completed_item
  local lsp_data = vim.tbl_get(done, 'user_data', 'nvim', 'lsp') or {}
  local item = lsp_data.completion_item
  if lsp_data.client_id ~= client_id or not (item and item.textEdit) then
    return
  end
  local text = item.textEdit.newText
  if text == done.word then
    return
  end
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local start = col - #done.word
  if api.nvim_get_current_line():sub(start + 1, col) ~= done.word then
    return
  end
  local lines = vim.split(text, '\n', { plain = true })
  api.nvim_buf_set_text(0, row - 1, start, row - 1, col, lines)
  local last_col = #lines == 1 and start + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { row + #lines - 1, last_col })
end

---@param client vim.lsp.Client
---@param bufnr integer
local function use_inline_completion(client, bufnr)
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr, client_id = client.id })
  vim.keymap.set('i', '<Tab>', function()
    if not vim.lsp.inline_completion.get() then
      return '<Tab>'
    end
  end, { buffer = bufnr, expr = true, desc = 'Accept the CodeGeeX2 suggestion' })
end

---@param client vim.lsp.Client
---@param bufnr integer
local function use_completion_menu(client, bufnr)
  vim.lsp.completion.enable(true, client.id, bufnr, {
    convert = function(item)
      if item.textEdit then
        return { word = first_line(item.textEdit.newText) }
      end
      return {}
    end,
  })
  api.nvim_create_autocmd('CompleteDone', {
    group = api.nvim_create_augroup('codegeex2_complete_' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function()
      if vim.v.event.reason == 'accept' then
        insert_whole_suggestion(client.id)
      end
    end,
  })
  vim.keymap.set('i', '<C-Space>', vim.lsp.completion.get, {
    buffer = bufnr,
    desc = 'Ask CodeGeeX2 for a completion',
  })
end

vim.lsp.enable('codegeex2')

api.nvim_create_autocmd('LspAttach', {
  group = api.nvim_create_augroup('codegeex2', { clear = true }),
  desc = 'Show CodeGeeX2 suggestions in insert mode',
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    if not client or client.name ~= 'codegeex2' then
      return
    end
    if vim.fn.has('nvim-0.12') == 1 then
      use_inline_completion(client, args.buf)
    else
      use_completion_menu(client, args.buf)
    end
  end,
})
