;;; emacs_driver.el --- Drive codegeex2-lsp.el in batch Emacs for test_emacs.py  -*- lexical-binding: t; -*-

;;; Commentary:

;; Loaded after editors/emacs is put on the load path.  It does what a user's init
;; file does (require the package, set the command and settings), opens the sample,
;; starts the client named by $CODEGEEX2_TEST_CLIENT ("eglot" or "lsp-mode") the way a
;; user does, then completes at the position through `completion-at-point-functions':
;; the first candidate, as `completion-at-point' would insert it, exit function and
;; all.  The server answers empty lists while the model loads, so it asks again until
;; a deadline.  Then it reads the acceptance count (lsp-mode runs the item's
;; command when it is inserted; eglot 1.9 does not), turns suggestions off with
;; `codegeex2-lsp-toggle' (everywhere, then for the buffer's language), asks again,
;; and reads `codegeex2-lsp-status'.  Everything it saw goes to
;; $CODEGEEX2_TEST_RESULT as JSON.

;;; Code:

(require 'cl-lib)
(require 'json)
(require 'package)

(defvar codegeex2-driver-result (list :emacs emacs-version)
  "What the session saw, written out as JSON at the end.")

(defvar codegeex2-driver-started (float-time))

(defun codegeex2-driver-env (name)
  "The test variable NAME, which must be set."
  (or (getenv name) (error "%s is not set" name)))

(defun codegeex2-driver-deadline-p ()
  "Whether the session ran out of time."
  (> (- (float-time) codegeex2-driver-started)
     (string-to-number (codegeex2-driver-env "CODEGEEX2_TEST_TIMEOUT_S"))))

(defun codegeex2-driver-note (key value)
  "Record VALUE under KEY in the result."
  (setq codegeex2-driver-result (plist-put codegeex2-driver-result key value)))

(defun codegeex2-driver-elapsed-ms ()
  "Milliseconds since the driver started."
  (round (* 1000 (- (float-time) codegeex2-driver-started))))

(defun codegeex2-driver-finish (&optional error-message)
  "Write the result with ERROR-MESSAGE, if any, and exit."
  (codegeex2-driver-note :error error-message)
  (codegeex2-driver-note :total_ms (codegeex2-driver-elapsed-ms))
  (with-temp-file (codegeex2-driver-env "CODEGEEX2_TEST_RESULT")
    (insert (json-serialize codegeex2-driver-result :null-object nil)))
  (kill-emacs (if error-message 1 0)))

(defun codegeex2-driver-wait-for (what predicate)
  "Process events until PREDICATE holds; fail with WHAT at the deadline."
  (while (not (funcall predicate))
    (when (codegeex2-driver-deadline-p)
      (error "Timed out waiting for %s" what))
    (accept-process-output nil 0.1)))

(defun codegeex2-driver-capf ()
  "The completion data of the first function in `completion-at-point-functions'.
Returns (FUNCTION BEG END TABLE . PROPS), as `completion-at-point' would use it."
  (let (found)
    (run-hook-wrapped 'completion-at-point-functions
                      (lambda (fun)
                        (let ((data (and (functionp fun) (funcall fun))))
                          (when (consp data)
                            (setq found (cons fun data))))))
    found))

(defun codegeex2-driver-candidates (data)
  "The candidates of capf DATA in display order."
  (pcase-let* ((`(,beg ,end ,table . ,props) data)
               (string (buffer-substring-no-properties beg end))
               (candidates (all-completions string table (plist-get props :predicate)))
               (metadata (completion-metadata string table nil))
               (sort (completion-metadata-get metadata 'display-sort-function)))
    (if sort (funcall sort candidates) candidates)))

(defun codegeex2-driver-complete (position)
  "Complete at POSITION with the first candidate, as `completion-at-point' inserts it."
  (let (data candidates)
    (while (null candidates)
      (when (codegeex2-driver-deadline-p)
        (error "No completion candidates before the deadline"))
      (goto-char position)
      (setq data (codegeex2-driver-capf))
      (setq candidates (and data (codegeex2-driver-candidates (cdr data))))
      (unless candidates
        (accept-process-output nil 0.3)))
    (codegeex2-driver-note :capf (symbol-name (car data)))
    (codegeex2-driver-note :candidates (vconcat (mapcar #'substring-no-properties candidates)))
    (pcase-let ((`(,beg ,end ,_table . ,props) (cdr data))
                (choice (car candidates)))
      (delete-region beg end)
      (goto-char beg)
      (insert choice)
      (when-let ((exit (plist-get props :exit-function)))
        (funcall exit choice 'finished)))
    (codegeex2-driver-note :buffer (buffer-substring-no-properties (point-min) (point-max)))))

(defun codegeex2-driver-position ()
  "The point of the LSP line and character (the sample is ASCII up to there)."
  (save-excursion
    (goto-char (point-min))
    (forward-line (string-to-number (codegeex2-driver-env "CODEGEEX2_TEST_LINE")))
    (forward-char (string-to-number (codegeex2-driver-env "CODEGEEX2_TEST_CHARACTER")))
    (point)))

(defun codegeex2-driver-package-version (name)
  "The installed version of package NAME, or the library's file if not a package."
  (let ((desc (cadr (assq name package-alist))))
    (if desc
        (package-version-join (package-desc-version desc))
      (locate-library (symbol-name name)))))

(defun codegeex2-driver-eglot ()
  "Start eglot with `eglot-ensure', as a mode hook would, and wait until it is up."
  (require 'eglot)
  (codegeex2-driver-note :eglot (codegeex2-driver-package-version 'eglot))
  (eglot-ensure)
  ;; eglot-ensure connects after the command that opened the buffer.
  (run-hooks 'post-command-hook)
  (codegeex2-driver-wait-for "eglot to connect" #'eglot-current-server)
  (codegeex2-driver-note :server (plist-get (eglot--server-info (eglot-current-server)) :name)))

(defun codegeex2-driver-lsp-mode ()
  "Start lsp-mode with `lsp', the project folder already imported."
  (require 'lsp-mode)
  (codegeex2-driver-note :lsp_mode (codegeex2-driver-package-version 'lsp-mode))
  (setq lsp-session-file (expand-file-name "lsp-session" user-emacs-directory)
        lsp-restart 'ignore
        lsp-enable-suggest-server-download nil)
  (lsp-workspace-folders-add (file-name-directory buffer-file-name))
  (lsp)
  (codegeex2-driver-wait-for
   "lsp-mode to initialise codegeex2"
   (lambda ()
     (let ((workspace (lsp-find-workspace 'codegeex2 buffer-file-name)))
       (and workspace (eq (lsp--workspace-status workspace) 'initialized)))))
  (codegeex2-driver-note :inline_mode (bound-and-true-p lsp-inline-completion-mode))
  (codegeex2-driver-note :inline (codegeex2-driver-lsp-mode-inline)))

(defun codegeex2-driver-lsp-mode-inline ()
  "Ask for textDocument/inlineCompletion through lsp-mode until it answers text."
  (let (text)
    (while (null text)
      (when (codegeex2-driver-deadline-p)
        (error "No inline completion before the deadline"))
      (goto-char (codegeex2-driver-position))
      (let* ((response (lsp-request "textDocument/inlineCompletion"
                                    (list :textDocument (lsp--text-document-identifier)
                                          :position (lsp--cur-position)
                                          :context (list :triggerKind 1))))
             (items (append (if (hash-table-p response)
                                (gethash "items" response)
                              response)
                            nil)))
        (if items
            (setq text (gethash "insertText" (car items)))
          (accept-process-output nil 0.3))))
    text))

(defun codegeex2-driver-served ()
  "Requests the server answered from the model or typed-ahead so far."
  (let ((served (codegeex2-lsp--get (codegeex2-lsp-status) "served")))
    (+ (codegeex2-lsp--get served "by_model") (codegeex2-lsp--get served "typed_ahead"))))

(defun codegeex2-driver-served-by-one-request ()
  "Ask for completions at the position once; how many requests the server served."
  (let ((before (codegeex2-driver-served)))
    (goto-char (codegeex2-driver-position))
    (let ((data (codegeex2-driver-capf)))
      (and data (codegeex2-driver-candidates (cdr data))))
    (- (codegeex2-driver-served) before)))

(defun codegeex2-driver-bool (value)
  "VALUE as JSON true or false: nil would be written as null."
  (if value t :false))

(defun codegeex2-driver-toggles ()
  "Read the acceptance count, then toggle everywhere and for the language, and back."
  (let ((stats (codegeex2-lsp--get (codegeex2-lsp-status) "stats")))
    (codegeex2-driver-note :accepted (codegeex2-lsp--get stats "accepted")))
  (codegeex2-driver-note :toggle_off (codegeex2-driver-bool (codegeex2-lsp-toggle)))
  (codegeex2-driver-note :served_when_off (codegeex2-driver-served-by-one-request))
  (codegeex2-driver-note
   :status_enabled
   (codegeex2-driver-bool
    (codegeex2-lsp--true-p (codegeex2-lsp--get (codegeex2-lsp-status) "enabled"))))
  (codegeex2-driver-note :toggle_on (codegeex2-driver-bool (codegeex2-lsp-toggle)))
  (let ((current-prefix-arg '(4)))
    (codegeex2-driver-note :language_off (codegeex2-driver-bool (call-interactively #'codegeex2-lsp-toggle))))
  (codegeex2-driver-note :served_when_language_off (codegeex2-driver-served-by-one-request))
  (codegeex2-driver-note
   :disabled (vconcat (codegeex2-lsp--get (codegeex2-lsp-status) "disabledLanguages")))
  (codegeex2-driver-note :language_on (codegeex2-driver-bool (codegeex2-lsp-toggle (codegeex2-lsp--language-id))))
  (codegeex2-driver-note :served_when_on (codegeex2-driver-served-by-one-request)))

(condition-case err
    (progn
      (package-initialize)
      (require 'codegeex2-lsp)
      (setq codegeex2-lsp-command
            (json-parse-string (codegeex2-driver-env "CODEGEEX2_TEST_SERVER_COMMAND")
                               :array-type 'list))
      (setq codegeex2-lsp-settings
            (list :model (codegeex2-driver-env "CODEGEEX2_TEST_MODEL") :device "cpu"))
      (find-file (codegeex2-driver-env "CODEGEEX2_TEST_FILE"))
      (codegeex2-driver-note :mode (symbol-name major-mode))
      (pcase (codegeex2-driver-env "CODEGEEX2_TEST_CLIENT")
        ("eglot" (codegeex2-driver-eglot))
        ("lsp-mode" (codegeex2-driver-lsp-mode))
        (client (error "Unknown client %s" client)))
      (codegeex2-driver-note :connected_ms (codegeex2-driver-elapsed-ms))
      (codegeex2-driver-complete (codegeex2-driver-position))
      (codegeex2-driver-toggles)
      (codegeex2-driver-finish))
  (error (codegeex2-driver-finish (error-message-string err))))

;;; emacs_driver.el ends here
