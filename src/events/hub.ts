/**
 * Where events go: the `keygate:<name>` diagnostics channel (for tracers and APM agents, which
 * subscribe without a reference to the keygate instance) and the listeners of `keys.on()`.
 *
 * A listener can never break or hold up what emitted it: it runs synchronously after the decision
 * or write is done, an exception it throws is caught (and reported once as a warning), and a
 * promise it returns is not awaited (a rejection is caught the same way).
 */
import { type Channel, channel } from 'node:diagnostics_channel';
import { rejectUnknownOptions } from '../options/checks.js';
import { EVENT_NAMES, type KeygateEventName, type KeygateEvents, type KeygateListener, channelNameOf } from './events.js';

/** One channel object per event, shared by every instance: Node keeps channels by name anyway. */
const CHANNELS = Object.fromEntries(EVENT_NAMES.map((name) => [name, channel(channelNameOf(name))])) as Record<KeygateEventName, Channel>;

/** Reported once per process and event, so a broken listener cannot flood the log. */
const warnedAbout = new Set<KeygateEventName>();

function reportListenerFailure(event: KeygateEventName, error: unknown): void {
  if (warnedAbout.has(event)) return;
  warnedAbout.add(event);
  const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  process.emitWarning(`keygate: a listener of ${event} failed (${reason}); keygate went on. Later failures of ${event} listeners are not reported.`, {
    code: 'KEYGATE_LISTENER_FAILED',
  });
}

/** Throws the TypeError of `on` / `off` for a name that is not an event, with "did you mean". */
function checkEventName(name: unknown, where: string): asserts name is KeygateEventName {
  if (typeof name !== 'string') throw new TypeError(`${where}: the event name must be a string, one of ${EVENT_NAMES.join(', ')}`);
  if (!(EVENT_NAMES as readonly string[]).includes(name)) {
    const hint = didYouMean(name);
    throw new TypeError(`${where}: unknown event \`${name}\`${hint} (events: ${EVENT_NAMES.join(', ')})`);
  }
}

/** ", did you mean `x`?" for a likely typo of an event name, or "": worded as rejectUnknownOptions words it everywhere. */
function didYouMean(name: string): string {
  try {
    rejectUnknownOptions({ [name]: true }, EVENT_NAMES, '');
  } catch (error) {
    return /(, did you mean `[^`]+`\?)/.exec((error as Error).message)?.[1] ?? '';
  }
  return '';
}

/** The events of one keygate instance. */
export class EventHub {
  readonly #listeners = new Map<KeygateEventName, Set<KeygateListener<KeygateEventName>>>();

  /** Adds a listener (once: adding the same function again changes nothing). */
  on<E extends KeygateEventName>(name: E, listener: KeygateListener<E>): void {
    checkEventName(name, 'keys.on()');
    if (typeof listener !== 'function') throw new TypeError('keys.on(): the listener must be a function');
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener as KeygateListener<KeygateEventName>);
  }

  /** Removes a listener; removing one that was never added changes nothing. */
  off<E extends KeygateEventName>(name: E, listener: KeygateListener<E>): void {
    checkEventName(name, 'keys.off()');
    const set = this.#listeners.get(name);
    set?.delete(listener as KeygateListener<KeygateEventName>);
    if (set?.size === 0) this.#listeners.delete(name);
  }

  /**
   * Whether anyone would receive `name` now. Emitters check it first, so an event nobody listens
   * to costs one lookup and no payload is built.
   */
  wants(name: KeygateEventName): boolean {
    return this.#listeners.has(name) || CHANNELS[name].hasSubscribers;
  }

  /** Delivers `payload` to the channel's subscribers and to every listener. Never throws. */
  emit<E extends KeygateEventName>(name: E, payload: KeygateEvents[E]): void {
    const target = CHANNELS[name];
    if (target.hasSubscribers) {
      // Node reports a subscriber's exception as an uncaught exception on the next tick (that is
      // diagnostics_channel's contract with its subscribers); publish itself does not throw.
      target.publish(payload);
    }
    const set = this.#listeners.get(name);
    if (!set) return;
    // A copy: a listener may add or remove listeners while this runs.
    for (const listener of [...set]) {
      try {
        const returned = listener(payload);
        if (returned !== null && typeof returned === 'object' && typeof (returned as PromiseLike<unknown>).then === 'function') {
          (returned as PromiseLike<unknown>).then(undefined, (error: unknown) => reportListenerFailure(name, error));
        }
      } catch (error) {
        reportListenerFailure(name, error);
      }
    }
  }
}
