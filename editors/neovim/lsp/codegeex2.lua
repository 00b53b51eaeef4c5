-- CodeGeeX2 AI code completion, as a Neovim 0.11+ LSP config named `codegeex2`.
--
-- Override any field with vim.lsp.config('codegeex2', { ... }) and start it with
-- vim.lsp.enable('codegeex2') (plugin/codegeex2.lua does that for you). Server
-- settings go in init_options with the server's camelCase keys, for example
-- init_options = { model = '/models/codegeex2-6b', device = 'cuda', maxNewTokens = 96 }.

---@type vim.lsp.Config
return {
  cmd = { 'codegeex2-lsp' },
  -- No filetypes: the model completes every language, so attach to every file.
  root_markers = { '.git', '.hg', '.svn' },
  -- One server for all buffers and projects: each server process holds its own
  -- copy of the model, which is far too large to load once per project.
  reuse_client = function(client, config)
    return client.name == config.name and not client:is_stopped()
  end,
  -- An empty dict, not {}, so that it is sent as a JSON object.
  init_options = vim.empty_dict(),
}
