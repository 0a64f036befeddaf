// @agentsentinel/beacon: the in-process Sentinel SDK for Node agents.
export {
  Beacon,
  RevokedError,
  SentinelStop,
  TerminatedError,
  DEFAULT_FINAL_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_INTERVAL_MS,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  VERSION,
  backoff,
  type BeaconOptions,
  type Logger,
  type Status,
} from "./beacon.js";
export { ABSClient, type ABSClientOptions, type ABSEvent, type ABSResult } from "./abs.js";
export { defaultId, detectPlatform, sanitizeId, validId, type DetectOptions, type Platform } from "./platform.js";
export { StatusError, TransportError, retryable, type Protocol, type RuntimeToken } from "./protocol.js";
export { readTokenFile, writeTokenFile } from "./tokenfile.js";
