"""Tail the proxy's log files (Fluent Bit / Vector style): identity, checkpoints, rotation.

Split by job: `settings` (config), `fingerprint` (file identity), `checkpoint` (offsets on
disk), `splitter` (bytes -> lines), `watcher` (discovery, rotation, reading), `stdin`
(the "-" source), `source` (the app component: thread, bounded queue, publish, metrics).
"""
