//! Model tests of the slot word's acquire / release / close / reassign
//! interleavings, with visible readers, fast writers and the owner. Run
//! with `RUSTFLAGS="--cfg loom" cargo test --release --lib slot_state`.

use super::*;
use loom::sync::Arc;
use loom::thread;

/// No reader records: every reader here is counted.
fn no_readers() -> Readers {
    Readers::new(0)
}

/// A client releases as a client does: quietly, or through the owner
/// (modelled by doing the owner's part in place). Whether it asked the
/// owner.
fn client_release(s: &SlotState, write: bool, dirtied: bool) -> bool {
    let asked = !s.try_release_quietly(write, dirtied);
    if asked {
        s.let_go(write, dirtied);
    }
    asked
}

/// A slot open to clients, free, unbiased.
fn open_slot() -> Arc<SlotState> {
    let s = Arc::new(SlotState::new());
    s.open(true);
    s
}

/// A client acquiring block A races the owner evicting A and reusing
/// the slot for B. Whatever the interleaving, the client ends up either
/// holding the slot *with key A* (and the owner's close failed) or not
/// holding it at all.
#[test]
fn acquire_races_evict_and_reassign() {
    loom::model(|| {
        let key = Arc::new(SlotKey::new());
        key.set(1, 10); // block A
        let state = open_slot();

        let (s, k) = (Arc::clone(&state), Arc::clone(&key));
        let client = thread::spawn(move || {
            if s.try_acquire(false) {
                if k.is(1, 10) {
                    return true; // holds A
                }
                client_release(&s, false, false);
            }
            false
        });

        // Owner: evict A, reassign to B, reopen.
        let evicted = state.try_close(0, &no_readers());
        if evicted {
            key.set(1, 20);
            state.open(true);
        }
        let holds_a = client.join().unwrap();
        if holds_a {
            // The owner must not have reassigned under the holder.
            assert!(!evicted, "evicted a held slot");
            assert!(key.is(1, 10));
            client_release(&state, false, false);
        }
        assert_eq!(holders(state.load()), 0);
    });
}

/// A writer and the owner's close never both hold the slot; a write
/// that completed before the close left the block dirty.
#[test]
fn exclusive_against_writer_and_owner() {
    loom::model(|| {
        let state = open_slot();
        let s = Arc::clone(&state);
        let writer = thread::spawn(move || {
            if s.try_acquire(true) {
                assert_eq!(holders(s.load()), WRITER);
                client_release(&s, true, true);
                true
            } else {
                false
            }
        });
        let closed = state.try_close(0, &no_readers());
        let wrote = writer.join().unwrap();
        if closed && wrote {
            // The write happened entirely before the close: the close
            // saw no holder, and the block is dirty.
            assert!(state.load() & DIRTY != 0);
        }
        assert_eq!(holders(state.load()), 0);
    });
}

/// Of two readers leaving a slot the owner marked `WAKE`, exactly one
/// (the last) must go through the owner, whatever the order.
#[test]
fn exactly_the_last_holder_of_a_woken_slot_asks_the_owner() {
    loom::model(|| {
        let state = open_slot();
        assert!(state.try_acquire(false));
        assert!(state.try_acquire(false));
        state.close_and_wake(0, &no_readers());
        let s = Arc::clone(&state);
        let other = thread::spawn(move || client_release(&s, false, false));
        let mine = client_release(&state, false, false);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "exactly one release asks the owner");
        assert_eq!(holders(state.load()), 0);
    });
}

/// The owner arming `WAKE` races the last holder leaving: either the
/// holder sees the mark and asks the owner, or the owner's look after
/// arming sees the slot already free. Never neither.
#[test]
fn arming_wake_races_a_quiet_release() {
    loom::model(|| {
        let state = open_slot();
        assert!(state.try_acquire(false));
        let s = Arc::clone(&state);
        let holder = thread::spawn(move || !s.try_release_quietly(false, false));
        state.wake_on_release(0, &no_readers());
        let owner_saw_free = holders(state.load()) == 0;
        let asked = holder.join().unwrap();
        assert!(asked || owner_saw_free, "a release slipped past the wake");
        if asked {
            state.let_go(false, false);
        }
    });
}

/// One reader record, claimed: what a client thread has.
fn one_record() -> Arc<Readers> {
    let r = Arc::new(Readers::new(1));
    assert_eq!(r.claim(), Some(0));
    r
}

/// A biased, referenced, open slot: visible readers may take it.
fn biased_slot() -> Arc<SlotState> {
    let s = open_slot();
    assert!(s.try_acquire(false)); // sets REFERENCED | BIASED
    assert!(s.try_release_quietly(false, false));
    s
}

/// `visible_release_of` for entry 0 of record 0 and slot 0.
fn visible_release(s: &SlotState, r: &Readers, held: &Visible) {
    visible_release_of(s, &r.record(0).entries[0], 0, held);
}

/// A fast writer as `take_resident` is one: take the slot counted,
/// then back off if a visible reader holds it. Whether it holds it.
fn fast_write(s: &SlotState, r: &Readers) -> bool {
    match s.acquire_counted(true) {
        Some(prev) if SlotState::visible_readers_beside(prev, 0, r) => {
            client_release(s, true, false);
            false
        }
        Some(_) => true,
        None => false,
    }
}

/// A visible reader of block A races the owner evicting A and giving
/// the slot to B: the reader holds A only if the owner's close failed,
/// and a close that failed counted the reader.
#[test]
fn visible_acquire_races_evict_and_reassign() {
    loom::model(|| {
        let (state, readers) = (biased_slot(), one_record());
        let key = Arc::new(SlotKey::new());
        key.set(1, 10);
        let (s, r, k) = (Arc::clone(&state), Arc::clone(&readers), Arc::clone(&key));
        let client = thread::spawn(move || {
            let entry = r.record(0).free_entry().unwrap();
            let got = s.try_acquire_visible(0, entry);
            if got != Visible::Refused && !k.is(1, 10) {
                visible_release(&s, &r, &got);
                return Visible::Refused;
            }
            got
        });
        let evicted = state.try_close(0, &readers);
        if evicted {
            key.set(1, 20);
            state.open(true);
        }
        let got = client.join().unwrap();
        if got != Visible::Refused {
            assert!(!evicted, "evicted a visibly held slot");
            assert!(key.is(1, 10));
            visible_release(&state, &readers, &got);
        }
        assert_eq!(holders(state.load()), 0);
        assert_eq!(readers.record(0).entries[0].0.load(Relaxed), 0);
    });
}

/// A client writer and a visible reader never both hold the slot.
#[test]
fn visible_reader_excludes_a_fast_writer() {
    loom::model(|| {
        let (state, readers) = (biased_slot(), one_record());
        let (s, r) = (Arc::clone(&state), Arc::clone(&readers));
        let reader = thread::spawn(move || {
            let entry = r.record(0).free_entry().unwrap();
            s.try_acquire_visible(0, entry)
        });
        let wrote = fast_write(&state, &readers);
        let read = reader.join().unwrap();
        assert!(!(wrote && read != Visible::Refused), "a writer beside a reader");
        if wrote {
            client_release(&state, true, true);
        }
        visible_release(&state, &readers, &read);
        assert_eq!(holders(state.load()), 0);
    });
}

/// The owner arming `WAKE` (which counts visible readers) races a
/// visible reader leaving: either the owner's look sees the slot free,
/// or the reader's share was counted and its release asks the owner.
/// Never neither, and the count ends at zero.
#[test]
fn arming_wake_counts_a_visible_reader_or_sees_it_gone() {
    loom::model(|| {
        let (state, readers) = (biased_slot(), one_record());
        let entry = readers.record(0).free_entry().unwrap();
        assert_eq!(state.try_acquire_visible(0, entry), Visible::Held);
        let (s, r) = (Arc::clone(&state), Arc::clone(&readers));
        let holder = thread::spawn(move || {
            if r.record(0).entries[0].release(0) {
                false
            } else {
                client_release(&s, false, false)
            }
        });
        state.wake_on_release(0, &readers);
        let owner_saw_free = holders(state.load()) == 0;
        let asked = holder.join().unwrap();
        assert!(asked || owner_saw_free, "a visible release slipped past the wake");
        assert_eq!(holders(state.load()), 0);
        assert_eq!(readers.record(0).entries[0].0.load(Relaxed), 0);
    });
}

// A fast writer and the owner together: interleavings the models above
// do not reach, where a writer, a visible reader and the owner's count
// meet.

/// The owner's two counts that leave a fast writer a way in: a wake
/// (the slot stays open while it counts) and a close-and-wake (whose
/// conversion a writer's later scan must still see).
fn owner_counts() -> [fn(&SlotState, &Readers); 2] {
    [|s, r| s.wake_on_release(0, r), |s, r| s.close_and_wake(0, r)]
}

/// A fast writer racing an owner count never holds the slot beside
/// the visible reader.
#[test]
fn a_writer_racing_an_owner_count_never_joins_a_visible_reader() {
    for count in owner_counts() {
        loom::model(move || {
            let (state, readers) = (biased_slot(), one_record());
            let entry = readers.record(0).free_entry().unwrap();
            assert_eq!(state.try_acquire_visible(0, entry), Visible::Held);
            let (s, r) = (Arc::clone(&state), Arc::clone(&readers));
            let writer = thread::spawn(move || fast_write(&s, &r));
            count(&state, &readers);
            // The visible reader still holds its share here.
            assert!(!writer.join().unwrap(), "a writer beside a visible reader");
        });
    }
}

/// A reader backing off from a fast writer, whose entry an owner count
/// converts meanwhile, never keeps that counted share beside the
/// writer; and every share ends released.
#[test]
fn a_reader_converted_while_backing_off_never_joins_a_writer() {
    for count in owner_counts() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let (state, readers) = (biased_slot(), one_record());
            let (s, r) = (Arc::clone(&state), Arc::clone(&readers));
            let reader = thread::spawn(move || {
                let entry = r.record(0).free_entry().unwrap();
                s.try_acquire_visible(0, entry)
            });
            let (s, r) = (Arc::clone(&state), Arc::clone(&readers));
            let writer = thread::spawn(move || fast_write(&s, &r));
            count(&state, &readers);
            let read = reader.join().unwrap();
            let wrote = writer.join().unwrap();
            let holds = matches!(read, Visible::Held | Visible::Counted);
            assert!(!(wrote && holds), "a writer beside a reader: {read:?}");
            if wrote {
                client_release(&state, true, true);
            }
            visible_release(&state, &readers, &read);
            assert_eq!(holders(state.load()), 0);
        });
    }
}

// The block's bytes, modelled as a loom cell: a reader's last read of a
// slot must happen before whoever decides from a scan that the reader
// is gone (the owner's I/O, a fast writer), also when the entry has
// meanwhile been reused for another slot (so filling an entry is a
// Release store and finding a free one an Acquire load).

type Block = Arc<loom::cell::UnsafeCell<u64>>;

fn block() -> Block {
    Arc::new(loom::cell::UnsafeCell::new(0))
}

/// A holder reads the block.
fn read_block(b: &Block) {
    // SAFETY: this is the claim under test (the caller holds the slot,
    // so nobody writes the cell now); loom reports a causality
    // violation if a write is not ordered against this read.
    b.with(|p| unsafe { p.read() });
}

/// The owner's I/O, or a writer holding the slot, writes the block.
fn write_block(b: &Block) {
    // SAFETY: as in `read_block`, checked by loom.
    b.with_mut(|p| unsafe { p.write(1) });
}

/// A reader thread: read slot 0's block through a visible share and
/// let it go, then take the same entry for slot 1 (`u`, `s`) and, if
/// `let_go`, let that go too.
fn read_then_reuse(r: &Readers, u: &SlotState, s: &SlotState, b: &Block, let_go: bool) {
    let e = r.record(0).free_entry().unwrap();
    let first = u.try_acquire_visible(0, e);
    if first == Visible::Held {
        read_block(b);
    }
    visible_release_of(u, e, 0, &first);
    let e = r.record(0).free_entry().unwrap();
    let second = s.try_acquire_visible(1, e);
    if let_go {
        visible_release_of(s, e, 1, &second);
    }
}

/// A client releases a share `try_acquire_visible` gave it as a guard
/// does: emptying the entry, or, if the owner converted it (or it was
/// counted to begin with), as a counted share.
fn visible_release_of(s: &SlotState, e: &Entry, slot: u32, held: &Visible) {
    match held {
        Visible::Held if e.release(slot) => {}
        Visible::Held | Visible::Counted | Visible::CountedBesideWriter => {
            client_release(s, false, false);
        }
        Visible::Refused => {}
    }
}

/// Slots 0 and 1, biased, and one record.
fn two_slots() -> (Arc<Readers>, Arc<SlotState>, Arc<SlotState>, Block) {
    (one_record(), biased_slot(), biased_slot(), block())
}

#[test]
fn a_reused_entry_still_orders_the_last_read_before_the_owners_io() {
    loom::model(|| {
        let (readers, u, s, b) = two_slots();
        let (r2, u2, s2, b2) = (readers.clone(), u.clone(), s.clone(), b.clone());
        let reader = thread::spawn(move || read_then_reuse(&r2, &u2, &s2, &b2, false));
        if u.try_close(0, &readers) {
            write_block(&b);
        }
        reader.join().unwrap();
    });
}

#[test]
fn a_reused_entry_still_orders_the_last_read_before_a_writer() {
    loom::model(|| {
        let (readers, u, s, b) = two_slots();
        let (r2, u2, s2, b2) = (readers.clone(), u.clone(), s.clone(), b.clone());
        let reader = thread::spawn(move || read_then_reuse(&r2, &u2, &s2, &b2, false));
        if fast_write(&u, &readers) {
            write_block(&b);
        }
        reader.join().unwrap();
    });
}

/// A guard moved to another thread and dropped there; its entry is
/// then reused by the record's own thread for another slot.
#[test]
fn an_entry_freed_on_another_thread_then_reused_still_orders_the_read() {
    loom::model(|| {
        let (readers, u, s, b) = two_slots();
        let e = readers.record(0).free_entry().unwrap();
        assert_eq!(u.try_acquire_visible(0, e), Visible::Held);
        let (r2, u2, b2) = (readers.clone(), u.clone(), b.clone());
        let mover = thread::spawn(move || {
            read_block(&b2);
            visible_release_of(&u2, &r2.record(0).entries[0], 0, &Visible::Held);
        });
        let (r3, s3) = (readers.clone(), s.clone());
        let own = thread::spawn(move || {
            let e = r3.record(0).free_entry().unwrap();
            let _ = s3.try_acquire_visible(1, e);
        });
        if u.try_close(0, &readers) {
            write_block(&b);
        }
        mover.join().unwrap();
        own.join().unwrap();
    });
}

/// The entry emptied after a conversion (backing off from slot 1, which
/// the owner closes) is what the owner's scan for slot 0 reads.
#[test]
fn an_entry_emptied_after_a_conversion_orders_the_read_for_the_owner() {
    loom::model(|| {
        let (readers, u, s, b) = two_slots();
        let (r2, u2, s2, b2) = (readers.clone(), u.clone(), s.clone(), b.clone());
        let reader = thread::spawn(move || read_then_reuse(&r2, &u2, &s2, &b2, true));
        s.close(1, &readers);
        if u.try_close(0, &readers) {
            write_block(&b);
        }
        reader.join().unwrap();
    });
}

/// As above, with a fast writer of slot 0 reading the emptied entry.
#[test]
fn an_entry_emptied_after_a_conversion_orders_the_read_for_a_writer() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(5);
    builder.check(|| {
        let (readers, u, s, b) = two_slots();
        let (r2, u2, s2, b2) = (readers.clone(), u.clone(), s.clone(), b.clone());
        let reader = thread::spawn(move || read_then_reuse(&r2, &u2, &s2, &b2, true));
        let (r3, u3, b3) = (readers.clone(), u.clone(), b.clone());
        let writer = thread::spawn(move || {
            if let Some(prev) = u3.acquire_counted(true) {
                if !SlotState::visible_readers_beside(prev, 0, &r3) {
                    write_block(&b3);
                }
            }
        });
        s.close(1, &readers);
        reader.join().unwrap();
        writer.join().unwrap();
    });
}

/// The thread completing a read grants the slot to the get that caused
/// it, sends the owner the completion, and only then answers the get; the
/// owner reopens the slot once it has the completion (`engine::Grant`,
/// `Completer::complete`). Whatever the interleaving, the granted reader
/// reads the block as the read left it, and so does a reader that takes
/// the slot in its own thread beside it: it can take the slot only after
/// the reopen, which the owner makes after it has the completion, and
/// which orders the read's bytes before it.
#[test]
fn a_read_completion_grants_before_the_owner_reopens() {
    loom::model(|| {
        // Closed with no holders: as the owner leaves a slot it reads into.
        let state = Arc::new(SlotState::new());
        let b = block();
        let (to_owner, completions) = loom::sync::mpsc::channel::<()>();
        let (answer, reply) = loom::sync::mpsc::channel::<()>();

        let (s, bk) = (Arc::clone(&state), b.clone());
        let completer = thread::spawn(move || {
            write_block(&bk); // the kernel fills the block
            s.grant(false);
            to_owner.send(()).unwrap();
            answer.send(()).unwrap();
        });
        let (s, bk) = (Arc::clone(&state), b.clone());
        let fast_reader = thread::spawn(move || {
            if s.try_acquire(false) {
                read_block(&bk);
                client_release(&s, false, false);
            }
        });
        // This thread is first the owner (the completion, then the slot
        // opens to clients), then the client the read was for.
        completions.recv().unwrap();
        state.open(false);
        reply.recv().unwrap();
        read_block(&b);
        client_release(&state, false, false);
        completer.join().unwrap();
        fast_reader.join().unwrap();
        assert_eq!(holders(state.load()), 0);
    });
}
