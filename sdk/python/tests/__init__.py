import logging

# The SDK's own warnings would reach stderr through logging's last resort;
# the tests that look at them capture them with assertLogs.
logging.getLogger("sentinel_beacon").addHandler(logging.NullHandler())
