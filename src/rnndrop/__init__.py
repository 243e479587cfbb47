"""rnndrop: dropout done right for recurrent networks."""
__version__ = "0.1.0"
