"""A demo LPS (logiciel du professionnel de santé) that uses the Proxy e-Santé as an editor's software would."""
