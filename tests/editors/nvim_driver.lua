-- Drives headless Neovim through the editors/neovim set-up for test_neovim.py.
--
-- Loaded with -c after the plugin, so the set-up is the one a user gets. It points the
-- `codegeex2` config at the test server and the tiny model, opens the sample, then:
--   1. asks the attached client for textDocument/inlineCompletion at the position,
--      retrying while the model loads (the server answers empty lists until then);
--   2. types in insert mode as a user would: append at the position, <C-Space> (the
--      plugin's mapping on 0.11) to open the completion menu, <C-y> to accept the
--      first item, <Esc>; and records the buffer;
--   3. reads the acceptance count the item's command raised, then runs `:CodeGeeX2 toggle`,
--      asks again (an empty answer), `:CodeGeeX2 status`, and toggles back.
-- Everything it saw goes to $CODEGEEX2_TEST_RESULT as JSON; every wait has a deadline.

local env = vim.env
local uv = vim.uv
local started = uv.now()
local deadline = started + 1000 * tonumber(env.CODEGEEX2_TEST_TIMEOUT_S)
local line = tonumber(env.CODEGEEX2_TEST_LINE)
local character = tonumber(env.CODEGEEX2_TEST_CHARACTER)
local result = { nvim = tostring(vim.version()), timings_ms = {} }

local function elapsed()
  return uv.now() - started
end

local function left()
  return math.max(0, deadline - uv.now())
end

local function finish(err)
  result.error = err
  result.timings_ms.total = elapsed()
  local file = assert(io.open(env.CODEGEEX2_TEST_RESULT, 'w'))
  file:write(vim.json.encode(result))
  file:close()
  vim.cmd(err and 'cquit 1' or 'qall!')
end

local function attached_client()
  local client = vim.lsp.get_clients({ bufnr = 0, name = 'codegeex2' })[1]
  if client and client.initialized then
    return client
  end
end

local function inline_request(client)
  -- The position itself, not the cursor's: in normal mode the cursor cannot stand after
  -- the last character, where an insert-mode request is made.
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(0),
    position = { line = line, character = character },
    context = { triggerKind = 1 },
  }
  local response = client:request_sync('textDocument/inlineCompletion', params, left(), 0)
  if not response or response.err then
    return nil, vim.inspect(response)
  end
  local items = response.result and (response.result.items or response.result) or {}
  return items
end

local function server_status(client)
  local response = client:request_sync(
    'workspace/executeCommand',
    { command = 'codegeex2.status', arguments = {} },
    left(),
    0
  )
  return response and response.result
end

--- Runs an Ex command that reports through vim.notify, and returns what it reported.
local function notified_by(ex_command)
  local messages = {}
  local notify = vim.notify
  vim.notify = function(message)
    table.insert(messages, message)
  end
  vim.cmd(ex_command)
  local ok = vim.wait(left(), function()
    return #messages > 0
  end, 20)
  vim.notify = notify
  return ok and messages[1] or nil
end

--- Requests the model or typed-ahead answered so far.
local function served(client)
  local status = server_status(client)
  return status and (status.served.by_model + status.served.typed_ahead)
end

local function toggles(client)
  -- The accepted item's command went to the server before this request.
  local status = server_status(client)
  result.accepted = status and status.stats.accepted
  result.toggle_off = notified_by('CodeGeeX2 toggle')
  local before = served(client)
  local items, err = inline_request(client)
  result.items_when_off = err or #items
  result.served_when_off = served(client) - before
  result.status_message = notified_by('CodeGeeX2 status')
  result.toggle_on = notified_by('CodeGeeX2 toggle')
  before = served(client)
  _, err = inline_request(client)
  result.served_when_on = err or served(client) - before
  finish(nil)
end

local function popup_completion(client)
  local typed_at = uv.now()
  local tries = 0
  local timer = assert(uv.new_timer())

  local function ask()
    tries = tries + 1
    vim.api.nvim_feedkeys(vim.keycode('<C-Space>'), 'm', false)
  end

  local function accept()
    timer:stop()
    timer:close()
    result.popup_items = vim.tbl_map(function(item)
      return item.word
    end, vim.fn.complete_info({ 'items' }).items)
    result.popup_tries = tries
    vim.api.nvim_create_autocmd('InsertLeave', {
      once = true,
      callback = vim.schedule_wrap(function()
        result.popup_buffer = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, true), '\n')
        result.timings_ms.popup = uv.now() - typed_at
        toggles(client)
      end),
    })
    vim.api.nvim_feedkeys(vim.keycode('<C-y><Esc>'), 'm', false)
  end

  local last_ask = uv.now()
  timer:start(
    100,
    100,
    vim.schedule_wrap(function()
      if timer:is_closing() then
        return
      end
      if left() == 0 then
        timer:stop()
        timer:close()
        finish(('no completion menu after %d requests (mode %s)'):format(tries, vim.fn.mode()))
      elseif #vim.fn.complete_info({ 'items' }).items > 0 then
        accept()
      elseif uv.now() - last_ask > 2000 then
        last_ask = uv.now()
        ask()
      end
    end)
  )

  vim.api.nvim_win_set_cursor(0, { line + 1, character })
  local at_end = character >= #vim.api.nvim_get_current_line()
  vim.api.nvim_feedkeys(at_end and 'a' or 'i', 'n', false)
  ask()
end

local function run()
  vim.lsp.config('codegeex2', {
    cmd = vim.json.decode(env.CODEGEEX2_TEST_SERVER_COMMAND),
    init_options = { model = env.CODEGEEX2_TEST_MODEL, device = 'cpu' },
  })
  vim.cmd.edit(vim.fn.fnameescape(env.CODEGEEX2_TEST_FILE))
  result.filetype = vim.bo.filetype

  local client
  if not vim.wait(left(), function()
    client = attached_client()
    return client ~= nil
  end, 50) then
    return finish('the codegeex2 client never attached to the buffer')
  end
  result.timings_ms.attached = elapsed()
  result.server_name = client.server_info and client.server_info.name
  result.inline_provider = client.server_capabilities.inlineCompletionProvider ~= nil
  result.menu_mapping = vim.fn.maparg('<C-Space>', 'i', false, true).buffer == 1

  local items, err = {}, nil
  while #items == 0 and left() > 0 do
    items, err = inline_request(client)
    if err then
      return finish('inlineCompletion failed: ' .. err)
    end
    if #items == 0 then
      vim.wait(math.min(300, left()))
    end
  end
  if #items == 0 then
    return finish('inlineCompletion stayed empty: the model never became ready')
  end
  local text = items[1].insertText
  result.inline = type(text) == 'table' and text.value or text
  result.timings_ms.inline = elapsed()

  popup_completion(client)
end

local ok, err = pcall(run)
if not ok then
  finish(tostring(err))
end
