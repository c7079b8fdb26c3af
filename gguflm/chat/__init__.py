"""Chat-template machinery: the guarded jinja2 sandbox behind `gguflm.chat_template`."""
