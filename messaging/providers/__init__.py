"""SMS provider plugins, found through the `messaging.providers` entry-point group."""
