export { type FollowLogOptions, LogStore, type LogStoreOptions, type TailOptions } from './store.ts';
