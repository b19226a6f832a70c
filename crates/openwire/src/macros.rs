//! `structure!` declares a data structure's fields once, in wire order, and
//! generates the struct and its (tight and loose) field codec from that one
//! list. Each field names its Rust type and its wire kind (see
//! `wire::Kind`), optionally `since N` for fields added in version N.

macro_rules! structure {
    // A command: BaseCommand's two fields come first on the wire.
    ($(#[$m:meta])* command $name:ident = $ty:literal { $($body:tt)* }) => {
        structure!(@def $(#[$m])* $name = $ty {
            /// Sequence number the sender gives the command; a Response
            /// carries it back as its `correlation_id`.
            command_id: i32 = $crate::wire::Int;
            /// Whether the sender expects a Response.
            response_required: bool = $crate::wire::Bool;
            $($body)*
        });
        structure!(@structure $name);
    };
    // A Response subtype: BaseCommand's fields and the correlation id.
    ($(#[$m:meta])* response $name:ident = $ty:literal { $($body:tt)* }) => {
        structure!($(#[$m])* command $name = $ty {
            /// The `command_id` of the command this answers.
            correlation_id: i32 = $crate::wire::Int;
            $($body)*
        });
    };
    ($(#[$m:meta])* plain $name:ident = $ty:literal { $($body:tt)* }) => {
        structure!(@def $(#[$m])* $name = $ty { $($body)* });
        structure!(@structure $name);
    };
    // Struct and field codec only; the type's `Structure` impl is by hand.
    ($(#[$m:meta])* custom $name:ident = $ty:literal { $($body:tt)* }) => {
        structure!(@def $(#[$m])* $name = $ty { $($body)* });
    };
    (@def $(#[$m:meta])* $name:ident = $ty:literal {
        $( $(#[$fm:meta])* $field:ident : $fty:ty = $kind:ty $(, since $since:literal)? ; )*
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $fty, )*
        }

        impl $name {
            /// The type byte that introduces this structure on the wire.
            pub const DATA_STRUCTURE_TYPE: u8 = $ty;

            #[allow(unused_variables)]
            pub(crate) fn encode_fields(&self, e: &mut $crate::wire::Enc<'_>) -> $crate::Result<()> {
                $(
                    if e.version >= $crate::wire::since(&[$($since)?]) {
                        <$kind as $crate::wire::Kind>::enc(&self.$field, e)
                            .map_err(|err| err.within(stringify!($name), stringify!($field)))?;
                    }
                )*
                Ok(())
            }

            #[allow(unused_variables, unused_mut)]
            pub(crate) fn decode_fields(d: &mut $crate::wire::Dec<'_, '_>) -> $crate::Result<Self> {
                let mut v = Self::default();
                $(
                    if d.version >= $crate::wire::since(&[$($since)?]) {
                        v.$field = <$kind as $crate::wire::Kind>::dec(d)
                            .map_err(|err| err.within(stringify!($name), stringify!($field)))?;
                    }
                )*
                Ok(v)
            }
        }
    };
    (@structure $name:ident) => {
        impl $crate::wire::Structure for $name {
            const NAME: &'static str = stringify!($name);
            fn data_type(&self) -> u8 {
                Self::DATA_STRUCTURE_TYPE
            }
            fn encode_body(&self, e: &mut $crate::wire::Enc<'_>) -> $crate::Result<()> {
                self.encode_fields(e)
            }
            fn from_command(c: $crate::Command) -> Option<Self> {
                match c {
                    $crate::Command::$name(v) => Some(v),
                    _ => None,
                }
            }
        }

        impl From<$name> for $crate::Command {
            fn from(v: $name) -> Self {
                $crate::Command::$name(v)
            }
        }
    };
}
