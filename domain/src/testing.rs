//! Given/when/then tests for aggregates, in the style of cqrs-es's test framework.

use crate::aggregate::Aggregate;

/// An aggregate test: given past events, when a command, then expect events or an error.
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// Starts from the state these events produce.
    pub fn given(events: Vec<A::Event>) -> Self {
        let mut state = A::default();
        for e in &events {
            state.apply(e);
        }
        Self { state }
    }

    /// Decides on `command`.
    pub fn when(self, command: A::Command) -> AggregateOutcome<A> {
        AggregateOutcome {
            result: self.state.handle(command),
        }
    }
}

/// What a command decided, to assert on.
pub struct AggregateOutcome<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateOutcome<A> {
    /// Asserts the command was accepted with exactly these events.
    #[track_caller]
    pub fn then_expect(self, expected: Vec<A::Event>) {
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(e) => panic!("expected events {expected:?}, command was denied: {e}"),
        }
    }

    /// Asserts the command was denied with this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected}, command produced {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }
}
