"""The CLI's commands, by theme: runs (run, follow, status, transcript, ls), decisions
(approve, reject, cancel) and admin (db, worker, codec-server); dev and demo are in
starter.stack_cmd. starter.cli parses the arguments and calls them by name."""
