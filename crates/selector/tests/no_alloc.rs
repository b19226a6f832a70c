//! Evaluation allocates nothing when the fields lend their values: counted
//! by a global allocator wrapper (its own test binary, one test, so no other
//! thread allocates meanwhile).
#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; it only counts

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use halyard_selector::{Options, Selector, Value};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn evaluation_does_not_allocate() {
    let mut msg: HashMap<String, Value<'static>> = HashMap::new();
    msg.insert("color".into(), Value::Str("red".into()));
    msg.insert("weight".into(), Value::Double(3.0));
    msg.insert("n".into(), Value::Long(7));
    msg.insert("price".into(), Value::Str("10".into()));
    msg.insert("name".into(), Value::Str("order-1-urgent".into()));
    let convert = Options {
        convert_string_expressions: true,
        ..Options::default()
    };
    let selectors = [
        Selector::parse("color = 'red' AND weight > 2.5").expect("valid"),
        Selector::parse("color IN ('blue', 'red', 'green') OR missing IS NULL").expect("valid"),
        Selector::parse("name LIKE 'order-%-urgent' AND NOT name LIKE '%x%'").expect("valid"),
        Selector::parse("n * 2 + 1 BETWEEN 10 AND 20 AND n / 0 IS NULL").expect("valid"),
        Selector::parse_with("price > 9 AND price = 10.0", &convert).expect("valid"),
    ];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut matched = 0;
    for _ in 0..100 {
        for s in &selectors {
            matched += usize::from(s.matches(&msg));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(matched, 500);
    assert_eq!(allocations, 0, "evaluation allocated {allocations} times");
}
