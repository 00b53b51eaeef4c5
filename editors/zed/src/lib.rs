//! Zed extension that starts the `codegeex2-lsp` language server.
//!
//! Zed runs only the language servers an extension declares, so this is the
//! smallest one that does: it finds `codegeex2-lsp` (or the command set in
//! `lsp.codegeex2.binary`) and passes `lsp.codegeex2.initialization_options`
//! through unchanged, so the server's camelCase settings work as documented.

use zed_extension_api::{self as zed, settings::LspSettings, LanguageServerId, Result};

const SERVER: &str = "codegeex2";
const EXECUTABLE: &str = "codegeex2-lsp";

struct CodeGeeX2;

impl zed::Extension for CodeGeeX2 {
    fn new() -> Self {
        CodeGeeX2
    }

    fn language_server_command(
        &mut self,
        _language_server_id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<zed::Command> {
        let binary = LspSettings::for_worktree(SERVER, worktree)
            .ok()
            .and_then(|settings| settings.binary);
        let configured = binary.as_ref().and_then(|binary| binary.path.clone());
        let command = configured
            .or_else(|| worktree.which(EXECUTABLE))
            .ok_or_else(|| {
                format!(
                    "{EXECUTABLE} is not on PATH: `pip install codegeex2-lsp`, \
                     or set lsp.{SERVER}.binary.path in settings.json"
                )
            })?;
        Ok(zed::Command {
            command,
            args: binary
                .as_ref()
                .and_then(|binary| binary.arguments.clone())
                .unwrap_or_default(),
            env: worktree.shell_env(),
        })
    }

    fn language_server_initialization_options(
        &mut self,
        _language_server_id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<zed::serde_json::Value>> {
        Ok(LspSettings::for_worktree(SERVER, worktree)
            .ok()
            .and_then(|settings| settings.initialization_options))
    }

    fn language_server_workspace_configuration(
        &mut self,
        _language_server_id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<zed::serde_json::Value>> {
        Ok(LspSettings::for_worktree(SERVER, worktree)
            .ok()
            .and_then(|settings| settings.initialization_options)
            .map(|options| zed::serde_json::json!({ SERVER: options })))
    }
}

zed::register_extension!(CodeGeeX2);
