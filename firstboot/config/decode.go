package config

// MaxSize bounds a config file: a real one is well under 4 KiB, and a source may later be the network.
const MaxSize = 1 << 20
