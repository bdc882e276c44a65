"""sdlora-ui: a web page for kohya_ss users, generated from sdlora's typed config (README "The web UI")."""
