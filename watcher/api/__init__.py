"""The API boundary: one client class, the API's objects, and the headers it sends.

Nothing above this package sees ``httpx`` or a raw reply: errors are translated once, in
:mod:`watcher.api.replies`, into :mod:`watcher.errors`. Imports :mod:`watcher.errors`,
:mod:`watcher.credentials`, and :mod:`watcher.config` for its defaults and the base URL's rule.
"""
