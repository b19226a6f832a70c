//! Java exceptions as OpenWire carries them (in `ExceptionResponse`,
//! `ConnectionError` and a poison `MessageAck`).

/// An exception as OpenWire carries it (`Throwable`): the stack trace and
/// cause travel only when the negotiated format has stack traces enabled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Throwable {
    /// The Java class name, e.g. `javax.jms.JMSSecurityException`.
    pub class_name: Option<String>,
    /// The message.
    pub message: Option<String>,
    /// The stack trace (sent only with stack traces enabled).
    pub stack_trace: Vec<StackTraceElement>,
    /// The cause (sent only with stack traces enabled).
    pub cause: Option<Box<Throwable>>,
}

impl Throwable {
    /// An exception of a class with a message.
    pub fn new(class_name: impl Into<String>, message: impl Into<String>) -> Self {
        Throwable {
            class_name: Some(class_name.into()),
            message: Some(message.into()),
            ..Throwable::default()
        }
    }
}

/// One frame of a [`Throwable`]'s stack trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct StackTraceElement {
    /// The declaring class.
    pub class_name: Option<String>,
    /// The method.
    pub method_name: Option<String>,
    /// The source file.
    pub file_name: Option<String>,
    /// The line (negative when unknown).
    pub line_number: i32,
}
