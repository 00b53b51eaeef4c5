-- Starts the `codegeex2` language server (lsp/codegeex2.lua) for every file and
-- puts its suggestions in insert mode:
--   Neovim 0.12+: ghost text from textDocument/inlineCompletion, <Tab> accepts it.
--   Neovim 0.11:  the completion menu (<C-Space> or <C-x><C-o>), <C-y> accepts;
--                 an accepted item inserts the whole suggestion, every line of it.
-- Set vim.g.codegeex2_enable = false before this file runs to keep only the config.
--
-- :CodeGeeX2 toggle [language]  suggestions off or on, everywhere or for one language id
-- :CodeGeeX2 status             the model's state, the switches and the acceptance counts
-- :CodeGeeX2 log                the LSP log, where the server's messages go

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

--- Runs one of the server's commands on the running codegeex2 client.
---@param command string
---@param arguments table
---@param on_result fun(result: any)
local function server_command(command, arguments, on_result)
  local client = vim.lsp.get_clients({ name = 'codegeex2' })[1]
  if not client then
    vim.notify('CodeGeeX2: the server is not running', vim.log.levels.WARN)
    return
  end
  client:request('workspace/executeCommand', { command = command, arguments = arguments }, function(err, result)
    if err then
      vim.notify(('CodeGeeX2: %s failed: %s'):format(command, err.message), vim.log.levels.ERROR)
    else
      on_result(result)
    end
  end)
end

---@param counts table
---@return string
local function describe_counts(counts)
  local rate = counts.shown > 0 and ('%d%%'):format(math.floor(100 * counts.accepted / counts.shown + 0.5)) or '-'
  return ('shown %d, accepted %d (%s), dismissed %d, %d characters accepted'):format(
    counts.shown,
    counts.accepted,
    rate,
    counts.dismissed,
    counts.acceptedChars
  )
end

local subcommands = {
  toggle = function(language)
    local arguments = language and { { languageId = language } } or {}
    server_command('codegeex2.toggle', arguments, function(result)
      local where = result.languageId and (' for ' .. result.languageId) or ''
      vim.notify(('CodeGeeX2 suggestions %s%s'):format(result.enabled and 'on' or 'off', where))
    end)
  end,
  status = function()
    server_command('codegeex2.status', {}, function(result)
      vim.notify(table.concat({
        ('CodeGeeX2: %s%s'):format(result.state, result.description ~= '' and (' (' .. result.description .. ')') or ''),
        ('suggestions %s; off in: %s'):format(
          result.enabled and 'on' or 'off',
          table.concat(result.disabledLanguages, ', ')
        ),
        describe_counts(result.stats),
      }, '\n'))
    end)
  end,
  log = function()
    vim.cmd.tabedit(vim.fn.fnameescape(vim.lsp.get_log_path()))
  end,
}

api.nvim_create_user_command('CodeGeeX2', function(command)
  local name, argument = command.fargs[1], command.fargs[2]
  local run = subcommands[name]
  if not run then
    vim.notify('CodeGeeX2: use :CodeGeeX2 toggle [language], status or log', vim.log.levels.ERROR)
    return
  end
  run(argument)
end, {
  nargs = '+',
  desc = 'CodeGeeX2: toggle [language], status, log',
  complete = function(_, line)
    if #vim.split(line, '%s+', { trimempty = true }) <= 2 then
      return { 'toggle', 'status', 'log' }
    end
    return {}
  end,
})

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
