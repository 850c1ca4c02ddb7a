#!/usr/bin/env node
// kubectl plugin entry: `kubectl orrery ...` runs the same CLI as `orrery ...`.
import './orrery.js';
