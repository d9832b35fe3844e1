"""The sync daemon: session and lock, watcher, debouncer, writer, tree guard, bookkeeping."""
