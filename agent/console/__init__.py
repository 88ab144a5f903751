"""The built-in console and the Alertmanager API v2 wiring.

feature.py     install(app): alert store, API v2, console routes, session middleware, deployment stats
security.py    session cookie (signed with the bearer token), CSRF, refusal of anonymous writes
deployments.py per-deployment minute buckets of the last hour (the Deployments page)
routes.py      `/` (HTML or the JSON route list), static assets, login/logout, console JSON views
static/        index.html, app.js, app.css: no build step, nothing fetched from another host
"""
