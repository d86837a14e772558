"""smolvlm-watch's built-in plugins (installed as ``smolvlm_watch_plugins``)."""
