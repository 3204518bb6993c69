"""Example domains, written as a user of this project writes theirs: modules that import only the
library (``shared``) and are registered by name (``REPLAY_HANDLER_MODULES``)."""
