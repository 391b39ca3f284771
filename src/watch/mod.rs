//! Watching the branches with raw inotify (being written).
