"""`confiance demo`: the trust space's whole story, narrated against the running services."""
