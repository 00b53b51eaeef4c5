;;; codegeex2-lsp.el --- CodeGeeX2 AI code completion through eglot or lsp-mode  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: tools, languages, convenience
;; SPDX-License-Identifier: Apache-2.0

;;; Commentary:

;; Registers the codegeex2-lsp language server, which completes code with the
;; CodeGeeX2-6B model, with whichever LSP client is installed:
;;
;; - eglot: a server program entry for every `prog-mode' buffer, placed
;;   first, so `eglot-ensure' starts CodeGeeX2 there.  Eglot runs one server
;;   per buffer, so this replaces the language's own server; use lsp-mode to
;;   keep both.  Suggestions come through `completion-at-point'.
;; - lsp-mode: an add-on client, which runs beside the language's own server.
;;   Where the installed lsp-mode has `lsp-inline-completion', suggestions are
;;   shown inline as you type; everywhere, they also come through
;;   `completion-at-point'.
;;
;; Usage:
;;
;;   (require 'codegeex2-lsp)
;;   (setq codegeex2-lsp-settings '(:model "THUDM/codegeex2-6b" :device "cuda"))
;;   (add-hook 'python-mode-hook #'eglot-ensure)   ; or #'lsp
;;
;; `M-x codegeex2-lsp-customize' lists every setting.
;; `M-x codegeex2-lsp-toggle' turns suggestions off or on everywhere (with a
;; prefix argument: for the buffer's language), `M-x codegeex2-lsp-status'
;; shows the model's state, the switches and the acceptance counts.

;;; Code:

(defgroup codegeex2-lsp nil
  "AI code completion from the CodeGeeX2 model, through a language server."
  :group 'tools
  :prefix "codegeex2-lsp-")

(defcustom codegeex2-lsp-command '("codegeex2-lsp")
  "The command that starts the language server, as a program and its arguments.
It speaks LSP on standard input and output.  Options given here, such as
\"--model\", are overridden by `codegeex2-lsp-settings'."
  :type '(repeat string))

(defcustom codegeex2-lsp-settings nil
  "Server settings, sent as LSP initialization options.
A plist of the server's camelCase keys, for example
\(:model \"THUDM/codegeex2-6b\" :device \"cuda\" :maxNewTokens 96).
A key left out keeps the server's default.  Changes apply to servers started
afterwards: restart a running one with `eglot-reconnect' or
`lsp-workspace-restart'."
  :type '(plist
          :tag "Settings"
          :options
          ((:model (string :tag "Hugging Face repo id or local directory"))
           (:device (choice (const "auto") (const "cpu") (const "cuda")
                            (const "mps") (string :tag "cuda:N")))
           (:dtype (choice (const "auto") (const "bfloat16") (const "float16")
                           (const "float32")))
           (:maxContextTokens (integer :tag "Prompt budget in tokens"))
           (:maxNewTokens (integer :tag "Longest suggestion in tokens"))
           (:temperature (number :tag "Sampling temperature, 0 for greedy"))
           (:topP (number :tag "Nucleus sampling mass"))
           (:topK (integer :tag "Top-k sampling, 0 for off"))
           (:multiline (choice (const "auto") (const "always") (const "never")))
           (:candidates (integer :tag "Suggestions on an explicit request"))
           (:debounceMs (integer :tag "Delay before an automatic request"))
           (:backend (choice (const "local") (const "openai") (const "shared")))
           (:serverUrl (string :tag "Completion server API URL, e.g. http://gpu:8000/v1"))
           (:servedModel (string :tag "Model name on the server, empty to ask"))
           (:requestTimeoutMs (integer :tag "Server timeout in milliseconds"))
           (:sharedIdleMinutes (number :tag "Minutes a shared server waits without windows"))
           (:enable (choice (const t) (const :json-false)))
           (:disabledLanguages (vector :tag "Language ids without suggestions" string))
           (:exclude (vector :tag "Gitignore-style patterns of files never read" string)))))

;; Which program runs and where code goes are the user's to say: a project's
;; .dir-locals.el that sets these is never applied without asking, nor remembered as safe.
(put 'codegeex2-lsp-command 'risky-local-variable t)
(put 'codegeex2-lsp-settings 'risky-local-variable t)

;;;###autoload
(defun codegeex2-lsp-customize ()
  "Show the CodeGeeX2 settings: server command and initialization options."
  (interactive)
  (customize-group 'codegeex2-lsp))

(defun codegeex2-lsp-initialization-options ()
  "The `initializationOptions' object: `codegeex2-lsp-settings' as JSON.
An empty plist becomes an empty hash table so that it is sent as {}, not null."
  (or (copy-sequence codegeex2-lsp-settings)
      (make-hash-table :test #'equal)))

(defun codegeex2-lsp--eglot-contact (_interactive)
  "Return the eglot contact of a new server: the current command and settings."
  (append codegeex2-lsp-command
          (list :initializationOptions
                (lambda (_server) (codegeex2-lsp-initialization-options)))))

(defvar eglot-server-programs)

(defun codegeex2-lsp--register-eglot ()
  "Make `eglot-ensure' start CodeGeeX2 in programming modes."
  (add-to-list 'eglot-server-programs
               (cons 'prog-mode #'codegeex2-lsp--eglot-contact)))

(declare-function lsp-register-client "lsp-mode" (client))
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode" (command &optional test-command))
(declare-function lsp-find-workspace "lsp-mode" (server-id &optional file-name))
(declare-function lsp-inline-completion-mode "lsp-inline-completion" (&optional arg))

(defvar lsp-inline-completion-enable)
(defvar lsp-inline-completion-mode)

(defun codegeex2-lsp--enable-inline-completion ()
  "Show suggestions inline as you type, where the installed lsp-mode can.
Runs in each buffer that lsp-mode configures; leaves buffers alone where
CodeGeeX2 is not running or the user turned `lsp-inline-completion-enable' off."
  (when (and (fboundp 'lsp-inline-completion-mode)
             (bound-and-true-p lsp-inline-completion-enable)
             (not (bound-and-true-p lsp-inline-completion-mode))
             (lsp-find-workspace 'codegeex2 (buffer-file-name)))
    (lsp-inline-completion-mode 1)))

(defun codegeex2-lsp--register-lsp-mode ()
  "Register CodeGeeX2 as an lsp-mode add-on client."
  (lsp-register-client
   (make-lsp-client
    :server-id 'codegeex2
    :new-connection (lsp-stdio-connection (lambda () codegeex2-lsp-command))
    :activation-fn (lambda (_file mode) (provided-mode-derived-p mode 'prog-mode))
    :add-on? t
    ;; Comments are where users describe the code they want next.
    :completion-in-comments? t
    ;; One server for every project: each one holds its own copy of the model.
    :multi-root t
    :priority -1
    :initialization-options #'codegeex2-lsp-initialization-options))
  (require 'lsp-inline-completion nil t)
  (add-hook 'lsp-configure-hook #'codegeex2-lsp--enable-inline-completion))

;;; Commands

(declare-function eglot-current-server "eglot" ())
(declare-function jsonrpc-request "jsonrpc" (connection method params &rest args))
(declare-function lsp-request "lsp-mode" (method params &rest args))
(declare-function lsp-buffer-language "lsp-mode" ())

(defvar lsp--cur-workspace)

(defun codegeex2-lsp--workspace ()
  "The lsp-mode workspace of CodeGeeX2 for this buffer, if lsp-mode runs it."
  (and (featurep 'lsp-mode)
       (lsp-find-workspace 'codegeex2 (buffer-file-name))))

(defun codegeex2-lsp--eglot-server ()
  "The eglot server of this buffer, if eglot runs one."
  (and (featurep 'eglot) (eglot-current-server)))

(defun codegeex2-lsp--execute (command &rest arguments)
  "Run the server's COMMAND with ARGUMENTS through the buffer's client; its result."
  (let ((params (list :command command :arguments (vconcat arguments)))
        (workspace (codegeex2-lsp--workspace))
        (server (codegeex2-lsp--eglot-server)))
    (cond (workspace
           (let ((lsp--cur-workspace workspace))
             (lsp-request "workspace/executeCommand" params)))
          (server (jsonrpc-request server :workspace/executeCommand params))
          (t (user-error "CodeGeeX2 is not running in this buffer")))))

(defun codegeex2-lsp--get (object key)
  "KEY (a string) of a JSON OBJECT as either client parses it.
lsp-mode gives hash tables (or plists), eglot plists."
  (if (hash-table-p object)
      (gethash key object)
    (plist-get object (intern (concat ":" key)))))

(defun codegeex2-lsp--true-p (value)
  "Whether a JSON boolean VALUE, as either client parses it, is true."
  (not (memq value '(nil :json-false))))

(defun codegeex2-lsp--language-id ()
  "The language id the buffer's client sends for it."
  (if (codegeex2-lsp--workspace)
      (lsp-buffer-language)
    ;; What eglot sends by default: the major mode's name without -mode.
    (replace-regexp-in-string "\\(-ts\\)?-mode\\'" "" (symbol-name major-mode))))

;;;###autoload
(defun codegeex2-lsp-toggle (&optional language)
  "Turn CodeGeeX2 suggestions off or on everywhere.
With a prefix argument, or with LANGUAGE (a language id), only for that
language; interactively, the buffer's.  Returns whether they are now on."
  (interactive (list (and current-prefix-arg (codegeex2-lsp--language-id))))
  (let* ((result (if language
                     (codegeex2-lsp--execute "codegeex2.toggle" (list :languageId language))
                   (codegeex2-lsp--execute "codegeex2.toggle")))
         (enabled (codegeex2-lsp--true-p (codegeex2-lsp--get result "enabled"))))
    (message "CodeGeeX2 suggestions %s%s" (if enabled "on" "off")
             (if language (format " for %s" language) ""))
    enabled))

;;;###autoload
(defun codegeex2-lsp-status ()
  "Show the model's state, where suggestions are off, and the acceptance counts.
Returns the server's answer."
  (interactive)
  (let* ((result (codegeex2-lsp--execute "codegeex2.status"))
         (stats (codegeex2-lsp--get result "stats"))
         (shown (codegeex2-lsp--get stats "shown"))
         (accepted (codegeex2-lsp--get stats "accepted")))
    (message "CodeGeeX2: %s; suggestions %s, off in %s; shown %d, accepted %d (%s), dismissed %d, %d characters accepted"
             (codegeex2-lsp--get result "state")
             (if (codegeex2-lsp--true-p (codegeex2-lsp--get result "enabled")) "on" "off")
             (mapconcat #'identity (codegeex2-lsp--get result "disabledLanguages") ", ")
             shown accepted
             (if (> shown 0) (format "%d%%" (round (* 100.0 accepted) shown)) "-")
             (codegeex2-lsp--get stats "dismissed")
             (codegeex2-lsp--get stats "acceptedChars"))
    result))

(with-eval-after-load 'eglot (codegeex2-lsp--register-eglot))
(with-eval-after-load 'lsp-mode (codegeex2-lsp--register-lsp-mode))

(provide 'codegeex2-lsp)
;;; codegeex2-lsp.el ends here
