"""The HTTP face of the app (`python -m app.serve`): routes in `openai_compat` and `native`, the
logic they share in `service`, the web page in `static/index.html`."""
