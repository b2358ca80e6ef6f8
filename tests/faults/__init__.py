"""The fault suite: each Neon behaviour that breaks applications, under load, checked for loss."""
